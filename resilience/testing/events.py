"""Events without a broker, for tests (nameko's ``worker_factory`` and event hooks, in small).

::

    service = build_service(AuditService)
    await deliver(service, "shop", "order_placed", {"id": i, "item": "tea"})

    dispatch = RecordingDispatcher()
    shop = build_service(ShopService, dispatch=dispatch, ...)
    ...
    assert dispatch.events == [("order_placed", {"id": i, "item": "tea"}, i)]
"""

from __future__ import annotations

import inspect
from typing import Any

from resilience.rpc.events import event_handlers


async def deliver(service: object, source_service: str, event_type: str, payload: Any) -> int:
    """Call every handler of ``service`` for ``source_service``'s ``event_type`` with ``payload``,
    as a consumer would (a handler's error is raised); return how many handlers ran."""
    ran = 0
    for handler in event_handlers(type(service)):
        if (handler.source_service, handler.event_type) == (source_service, event_type):
            result = getattr(service, handler.method)(payload)
            if inspect.isawaitable(result):
                await result
            ran += 1
    return ran


class RecordingDispatcher:
    """Stands in for an ``EventDispatcher``: keeps what would have been published, in order.

    ``fail_with`` makes every dispatch raise that error instead (a stream that is down).
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, str]] = []
        self.fail_with: BaseException | None = None

    async def __call__(self, event_type: str, payload: Any, *, event_id: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.events.append((event_type, payload, event_id))
