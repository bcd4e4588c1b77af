"""W3C Trace Context: what a traceparent is, and what goes on to the next service."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from resilience.observability.correlation import CORRELATION_HEADER, Propagation, parse_traceparent, received
from tests.conftest import AiohttpServer, MakeFacade

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_valid_traceparents_give_their_trace_id_and_flags() -> None:
    """Version 00 with four fields, and a later version with more, are read for trace-id and flags."""
    assert parse_traceparent(PARENT) == (TRACE_ID, "01")
    assert parse_traceparent(f"01-{TRACE_ID}-00f067aa0ba902b7-00-extra") == (TRACE_ID, "00")


def test_malformed_traceparents_are_none() -> None:
    """Anything the spec calls invalid is ignored: wrong case, lengths, version ff, zero IDs."""
    for bad in (None, "", "garbage", PARENT.upper(), f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
                f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", f"00-{'0' * 32}-00f067aa0ba902b7-01",
                f"00-{TRACE_ID}-{'0' * 16}-01", f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01"):
        assert parse_traceparent(bad) is None, bad


async def recording_logging(aiohttp_server: AiohttpServer) -> tuple[TestServer, list[dict[str, str]]]:
    """A stand-in logging that records the headers of every RPC it gets."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"result": {"stored": True}})

    app = web.Application()
    app.router.add_post("/rpc/{method}", record)
    return await aiohttp_server(app), seen


async def test_every_rpc_carries_the_trace_id_with_a_new_parent_id(
    make_facade: MakeFacade, aiohttp_server: AiohttpServer,
) -> None:
    """The RPC to logging has the client's trace-id, flags and tracestate, this hop's own parent-id,
    and the trace-id as X-Correlation-ID; the client's headers are echoed as sent."""
    server, seen = await recording_logging(aiohttp_server)
    facade = await make_facade(logging_url=str(server.make_url("")).rstrip("/"))
    resp = await facade.post("/facade", json={"msg": "traced"},
                             headers={"traceparent": PARENT, "tracestate": "a=1,b=2"})
    assert resp.status == 200
    assert (resp.headers["traceparent"], resp.headers[CORRELATION_HEADER]) == (PARENT, TRACE_ID)
    (rpc,) = seen
    version, trace_id, parent_id, flags = rpc["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent_id != "00f067aa0ba902b7"
    assert (rpc["tracestate"], rpc[CORRELATION_HEADER]) == ("a=1,b=2", TRACE_ID)


async def test_a_malformed_traceparent_is_ignored_not_fatal(
    make_facade: MakeFacade, aiohttp_server: AiohttpServer,
) -> None:
    """A bad traceparent changes nothing: the X-Correlation-ID is used and nothing is echoed for it."""
    server, seen = await recording_logging(aiohttp_server)
    facade = await make_facade(logging_url=str(server.make_url("")).rstrip("/"))
    resp = await facade.post("/facade", json={"msg": "x"},
                             headers={"traceparent": "00-nothex-00f067aa0ba902b7-01",
                                      CORRELATION_HEADER: "mine-1"})
    assert resp.status == 200
    assert resp.headers[CORRELATION_HEADER] == "mine-1"
    assert "traceparent" not in resp.headers
    assert seen[0][CORRELATION_HEADER] == "mine-1"
    assert "traceparent" not in seen[0]  # "mine-1" is no trace-id: nothing to propagate


async def test_a_minted_id_is_a_trace_id_and_is_propagated(
    make_facade: MakeFacade, aiohttp_server: AiohttpServer,
) -> None:
    """Without any ID from the client, the minted one is a valid trace-id sent on as a traceparent."""
    server, seen = await recording_logging(aiohttp_server)
    facade = await make_facade(logging_url=str(server.make_url("")).rstrip("/"))
    resp = await facade.post("/facade", json={"msg": "x"})
    minted = resp.headers[CORRELATION_HEADER]
    assert parse_traceparent(seen[0]["traceparent"]) == (minted, "00")


def test_what_an_event_or_request_carries_on_comes_from_its_headers() -> None:
    """A valid traceparent wins over the correlation header, and its tracestate is cut to 8 KiB,
    as a request's is (an event's headers go through the same rule); an invalid one is ignored."""
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    current, echoed = received({"traceparent": parent, CORRELATION_HEADER: "other",
                                "tracestate": "k=v," * 5000})
    assert (current.correlation_id, current.flags, echoed) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "01", parent)
    assert current.tracestate is not None
    assert len(current.tracestate) == 8192
    assert received({"traceparent": "garbage", CORRELATION_HEADER: "cid-7"}) == (Propagation("cid-7"), None)
