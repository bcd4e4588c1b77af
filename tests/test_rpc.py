"""The Nameko-style RPC layer: services as classes, dispatch, the HTTP server and the proxy."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from unittest.mock import AsyncMock

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from resilience import (
    AsyncCircuitBreaker,
    CallPolicy,
    Conflict,
    Dependency,
    InvalidArgument,
    MethodNotFound,
    RemoteError,
    RpcProxy,
    ServiceUnavailable,
    build_service,
    rpc,
    rpc_app,
)
from resilience.errors import ExpectedError, error_path, registered_error, remote_error
from resilience.observability.correlation import CORRELATION_HEADER, correlated
from resilience.policies.balancer import Balancer, Target
from resilience.testing import FakeClock, call_entrypoint, worker_factory
from tests.conftest import AiohttpServer, wait_for


class Counter:
    def __init__(self) -> None:
        self.value = 0


class EchoService:
    name = "echo"
    counter = Dependency(Counter)
    peer: Dependency[object] = Dependency()

    @rpc
    def echo(self, text: str, times: int = 1) -> str:
        return text * times

    @rpc(expected=(Conflict,))
    async def conflict(self) -> None:
        raise Conflict("already there")

    @rpc
    def undeclared(self) -> None:
        raise Conflict("not declared")

    @rpc
    def bug(self) -> None:
        raise ZeroDivisionError("secret internals")

    @rpc
    def counts(self, counts: dict[str, int]) -> object:
        return counts

    @rpc
    def maybe(self, value: int | None = None, items: list[str] | None = None) -> object:
        return [value, items]

    def not_exposed(self) -> str:
        return "hidden"


def test_build_service_injects_declared_dependencies() -> None:
    """Given dependencies are used as they are; the rest come from their factories."""
    peer = object()
    service = build_service(EchoService, peer=peer)
    assert service.peer is peer
    assert isinstance(service.counter, Counter)


def test_build_service_refuses_missing_and_unknown_dependencies() -> None:
    """A dependency with no factory must be given; an undeclared one is a typo."""
    with pytest.raises(TypeError, match="peer has no default"):
        build_service(EchoService)
    with pytest.raises(TypeError, match="declares no dependency"):
        build_service(EchoService, peer=1, typo=2)


def test_uninjected_dependency_says_so() -> None:
    """Using a service built without build_service fails with a clear message."""
    with pytest.raises(LookupError, match="not injected"):
        _ = EchoService().counter


def test_worker_factory_fakes_dependencies_without_a_default() -> None:
    """Like nameko's worker_factory: proxies become AsyncMocks, stores keep their factory."""
    service = worker_factory(EchoService)
    assert isinstance(service.peer, AsyncMock)
    assert isinstance(service.counter, Counter)


async def test_call_entrypoint_checks_arguments_like_the_server() -> None:
    """Missing, unknown and mistyped arguments are InvalidArgument before the method runs."""
    service = worker_factory(EchoService)
    assert await call_entrypoint(service, "echo", text="ab", times=2) == "abab"
    with pytest.raises(InvalidArgument, match="missing a required argument"):
        await call_entrypoint(service, "echo")
    with pytest.raises(InvalidArgument, match="unexpected keyword"):
        await call_entrypoint(service, "echo", text="a", extra=1)
    with pytest.raises(InvalidArgument, match="text must be str"):
        await call_entrypoint(service, "echo", text=5)
    with pytest.raises(InvalidArgument, match="times must be int"):
        await call_entrypoint(service, "echo", text="a", times=True)


async def test_optional_and_generic_annotations_are_checked() -> None:
    """``X | None`` admits null; ``list[str]`` a list of strings, ``dict[str, int]`` an object
    of whole numbers."""
    service = worker_factory(EchoService)
    assert await call_entrypoint(service, "maybe", value=None, items=["a"]) == [None, ["a"]]
    with pytest.raises(InvalidArgument, match=r"value must be int \| None"):
        await call_entrypoint(service, "maybe", value="3")
    with pytest.raises(InvalidArgument, match=r"items must be list\[str\] \| None"):
        await call_entrypoint(service, "maybe", items=["a", 1])
    assert await call_entrypoint(service, "counts", counts={"a": 1}) == {"a": 1}
    with pytest.raises(InvalidArgument, match=r"counts must be dict\[str, int\]"):
        await call_entrypoint(service, "counts", counts={"a": "1"})


async def test_only_rpc_methods_are_reachable() -> None:
    """A method without @rpc is not an entrypoint."""
    with pytest.raises(MethodNotFound):
        await call_entrypoint(worker_factory(EchoService), "not_exposed")


async def test_undeclared_expected_error_is_a_bug() -> None:
    """An ExpectedError the method did not declare surfaces as RuntimeError, not as data."""
    with pytest.raises(RuntimeError, match="undeclared Conflict"):
        await call_entrypoint(worker_factory(EchoService), "undeclared")


@pytest.fixture
async def echo_server(aiohttp_server: AiohttpServer) -> TestServer:
    return await aiohttp_server(rpc_app(worker_factory(EchoService)))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(session: aiohttp.ClientSession, server: TestServer, path: str, body: bytes,
               ctype: str = "application/json") -> tuple[int, object]:
    async with session.post(server.make_url(path), data=body,
                            headers={"Content-Type": ctype}) as resp:
        return resp.status, await resp.json()


async def test_server_answers_results_and_errors_as_data(
    echo_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """POST /rpc/<method> gives {"result": ...}; failures give {"error": {type, message, args}}."""
    assert await post(session, echo_server, "/rpc/echo", b'{"text": "hi"}') == (200, {"result": "hi"})
    assert await post(session, echo_server, "/rpc/conflict", b"{}") == (409, {"error": {
        "type": "Conflict", "message": "already there", "args": ["already there"],
        "path": "resilience.errors.Conflict"}})
    status, body = await post(session, echo_server, "/rpc/nope", b"{}")
    assert status == 404
    assert body["error"]["type"] == "MethodNotFound"  # type: ignore[index]


@pytest.mark.parametrize(("body", "ctype", "status"), [
    (b"{", "application/json", 400),
    (b"", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"text": "a"}', "text/plain", 415),
])
async def test_server_refuses_bad_bodies_cleanly(
    echo_server: TestServer, session: aiohttp.ClientSession, body: bytes, ctype: str, status: int
) -> None:
    """Non-JSON, malformed or non-object bodies get a 4xx error body, never a 500."""
    got, payload = await post(session, echo_server, "/rpc/echo", body, ctype)
    assert got == status
    assert set(payload["error"]) - {"path"} == {"type", "message", "args"}  # type: ignore[index]


async def test_server_hides_internals_of_unexpected_errors(
    echo_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A bug answers 500 InternalError without its message or a traceback."""
    status, body = await post(session, echo_server, "/rpc/bug", b"{}")
    assert status == 500
    assert body == {"error": {"type": "InternalError", "message": "internal error",
                              "args": ["internal error"]}}


async def test_health(echo_server: TestServer, session: aiohttp.ClientSession) -> None:
    """GET /health names the service."""
    async with session.get(echo_server.make_url("/health")) as resp:
        assert await resp.json() == {"status": "ok", "service": "echo"}


def proxy_for(session: aiohttp.ClientSession, url: str, attempts: int = 1) -> RpcProxy:
    clock = FakeClock()
    balancer = Balancer([Target(url, AsyncCircuitBreaker("echo", clock=clock))])
    policy = CallPolicy(balancer, attempts=attempts,
                        clock=clock, sleep=clock.sleep)
    return RpcProxy(session, "echo", policy)


async def test_proxy_calls_methods_and_reraises_declared_errors(
    echo_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """``await proxy.method(**kwargs)`` returns the result; declared errors come back as themselves."""
    proxy = proxy_for(session, str(echo_server.make_url("")))
    assert await proxy.echo(text="x", times=3) == "xxx"
    with pytest.raises(Conflict, match="already there"):
        await proxy.conflict()
    with pytest.raises(InvalidArgument):
        await proxy.echo(text=1)


async def test_proxy_calls_take_keyword_arguments_only(session: aiohttp.ClientSession) -> None:
    """A positional argument is refused before any request, saying why."""
    proxy = proxy_for(session, "http://127.0.0.1:9")
    with pytest.raises(TypeError, match=r"echo\.echo\(\) takes keyword arguments only"):
        await proxy.echo("x")


class Shadow:
    """Holds an error class named like a registered one, to show names alone do not match."""

    class Conflict(ExpectedError):
        """Same name as ``resilience.errors.Conflict``, never registered."""

        status = 409


class Unregistered(ExpectedError):
    """An expected error nobody registered with ``@remote_error``."""

    status = 409


class NamedService:
    name = "named"

    @rpc(expected=(Shadow.Conflict, Unregistered))
    def shadow(self) -> None:
        raise Shadow.Conflict("shadowed")

    @rpc(expected=(Unregistered,))
    def unregistered(self) -> None:
        raise Unregistered("nobody knows me")


def test_registry_is_keyed_by_qualified_path_and_refuses_a_second_class() -> None:
    """Registration is explicit, by module path; another class under a registered path is refused."""
    assert registered_error("resilience.errors.Conflict") is Conflict
    assert registered_error("Conflict") is None
    assert registered_error(error_path(Shadow.Conflict)) is None
    impostor = type("Conflict", (ExpectedError,), {"__module__": "resilience.errors"})
    with pytest.raises(TypeError, match="already registered"):
        remote_error(impostor)
    assert registered_error("resilience.errors.Conflict") is Conflict


def test_a_remote_error_must_be_rebuildable_from_its_message() -> None:
    """The caller rebuilds a registered error as ``cls(message)``: a constructor that needs more
    is refused at registration, where a caller would otherwise fail on every reply."""

    class OutOfStock(ExpectedError):
        def __init__(self, item: str, have: int) -> None:
            super().__init__(f"only {have} {item} left")

    with pytest.raises(TypeError, match="cannot be rebuilt from its message"):
        remote_error(OutOfStock)
    assert registered_error(error_path(OutOfStock)) is None


async def test_proxy_reraises_only_registered_types(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    """A declared error of an unregistered type, even one named like a registered one, is RemoteError."""
    server = await aiohttp_server(rpc_app(build_service(NamedService)))
    proxy = proxy_for(session, str(server.make_url("")))
    with pytest.raises(RemoteError) as shadowed:
        await proxy.shadow()
    assert (shadowed.value.error_type, shadowed.value.status) == ("Conflict", 409)
    with pytest.raises(RemoteError) as unknown:
        await proxy.unregistered()
    assert unknown.value.error_type == "Unregistered"


async def test_proxy_wraps_undeclared_errors_in_remote_error(
    echo_server: TestServer, session: aiohttp.ClientSession
) -> None:
    """Anything the remote side did not declare arrives as RemoteError with its type and status."""
    with pytest.raises(RemoteError) as info:
        await proxy_for(session, str(echo_server.make_url(""))).bug()
    assert (info.value.error_type, info.value.status) == ("InternalError", 500)


async def test_proxy_forwards_the_correlation_id(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    """Every RPC carries the current request's X-Correlation-ID."""
    seen: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get(CORRELATION_HEADER))
        return web.json_response({"result": None})

    app = web.Application()
    app.router.add_post("/rpc/{method}", record)
    server = await aiohttp_server(app)
    with correlated("abc-123"):
        await proxy_for(session, str(server.make_url(""))).anything()
    assert seen == ["abc-123"]


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (503, {"Retry-After": "2"}, 2.0), (502, {}, None), (504, {"Retry-After": "soon"}, None),
    (503, {"Retry-After": "inf"}, None), (503, {"Retry-After": "1e300"}, 3600.0),
])
async def test_proxy_turns_gateway_errors_into_service_unavailable(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession, status: int,
    headers: dict[str, str], retry_after: float | None,
) -> None:
    """502/503/504 are transient: ServiceUnavailable, with the Retry-After hint in seconds."""
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers, text="busy")

    app = web.Application()
    app.router.add_post("/rpc/{method}", unavailable)
    server = await aiohttp_server(app)
    with pytest.raises(ServiceUnavailable) as info:
        await proxy_for(session, str(server.make_url(""))).echo(text="a")
    assert info.value.retry_after == retry_after


async def test_proxy_reports_refused_connections_as_unavailable(
    session: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    """Nobody listening is ServiceUnavailable, not a raw aiohttp error."""
    with pytest.raises(ServiceUnavailable, match="ClientConnectorError"):
        await proxy_for(session, f"http://127.0.0.1:{unused_tcp_port}").echo(text="a")


class FlakyStoreService:
    """A service whose calls fail as a store that is down does, or wait until cancelled."""

    name = "flaky"

    def __init__(self) -> None:
        self.cancelled = 0

    @rpc
    async def down(self) -> None:
        raise ServiceUnavailable("store", "down")

    @rpc
    async def wait(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_batch_with_a_transient_failure_is_one_503_and_stops_its_other_calls(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    """Two calls of a batch fail as a store that is down: the batch is answered 503 once, the
    call still waiting is cancelled, and no failure is left unretrieved for asyncio to report."""
    service = FlakyStoreService()
    server = await aiohttp_server(rpc_app(service))
    unretrieved: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    try:
        batch = [{"method": "down"}, {"method": "down"}, {"method": "wait"}]
        status, body = await post(session, server, "/rpc", orjson.dumps(batch))
        assert status == 503
        assert body["error"]["type"] == "ServiceUnavailable"  # type: ignore[index]
        await wait_for(lambda: service.cancelled == 1)
        gc.collect()  # a task whose exception nobody retrieved reports it when collected
        assert unretrieved == []
    finally:
        loop.set_exception_handler(None)
