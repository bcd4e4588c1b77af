"""The messages service's settings: the server and event pieces, its port and its reads."""

from __future__ import annotations

from dataclasses import dataclass

from resilience import EventSettings, ServerSettings, between


@dataclass(frozen=True)
class MessagesSettings(EventSettings, ServerSettings):
    """Everything the messages service reads from the environment.

    Without ``NATS_URLS`` it is task 1's stub; with them it keeps the messages of the stream.
    """

    messages_port: int = between(5002, 0, 65535)
    # A read waits at most this long for the stream's newest events to be handled (then 503).
    messages_catch_up_timeout: float = 0.5
    # The largest page of messages a read answers, in bytes of JSON (logging's MAX_PAGE_BYTES).
    max_page_bytes: int = 1024 * 1024
