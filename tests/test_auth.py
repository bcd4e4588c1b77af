"""RPC authentication: signed requests under RPC_SECRET, and loopback only without one."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from facade.app import create_app as create_facade
from facade.settings import FacadeSettings
from logging_service.app import create_app as create_logging
from logging_service.settings import LoggingSettings
from messages.app import create_app as create_messages
from messages.settings import MessagesSettings
from resilience import ServerSettings, SettingsError
from resilience.rpc.signing import HEADER, WINDOW, Signer, Verifier
from tests.conftest import AiohttpClient, AiohttpServer, stored

SECRET = "correct horse battery staple"
PATH = "/rpc/log"
BODY = b'{"uuid": "0f792d29-f92f-4515-bb30-13c976a6e833", "msg": "hi"}'
NOW = 1_700_000_000.0


def signed(secret: str = SECRET, at: float = NOW, path: str = PATH, body: bytes = BODY) -> str:
    return Signer(secret, clock=lambda: at).headers(path, body)[HEADER]


def verifier(at: float = NOW) -> Verifier:
    return Verifier(SECRET, clock=lambda: at)


def test_a_good_signature_is_accepted() -> None:
    """A request signed with the shared secret, now, for this path and body, passes."""
    assert verifier().refusal(signed(), PATH, BODY) is None


@pytest.mark.parametrize(("header", "path", "body", "says"), [
    (None, PATH, BODY, "not signed"),
    (signed(secret="guess"), PATH, BODY, "does not match"),
    (signed(), PATH, BODY + b" ", "does not match"),  # the body was changed on the way
    (signed(), "/rpc/messages", BODY, "does not match"),  # replayed against another method
    (signed(at=NOW - WINDOW - 1), PATH, BODY, "old or ahead"),
    (signed(at=NOW + WINDOW + 1), PATH, BODY, "old or ahead"),
    ("Bearer " + SECRET, PATH, BODY, "must be RPC-HMAC-SHA256"),
    ("RPC-HMAC-SHA256 t=-5,sig=00", PATH, BODY, "must be RPC-HMAC-SHA256"),
    ("RPC-HMAC-SHA256 garbage", PATH, BODY, "must be RPC-HMAC-SHA256"),
])
def test_anything_else_is_refused_with_its_reason(header: str | None, path: str, body: bytes,
                                                   says: str) -> None:
    """No signature, another secret, another body or method, a stale or future time, another scheme:
    each is refused, and the reason says which."""
    refusal = verifier().refusal(header, path, body)
    assert refusal is not None
    assert says in refusal


def test_a_signature_inside_the_window_is_accepted() -> None:
    """Clock skew (or a retry's backoff) up to WINDOW seconds is tolerated either way."""
    assert verifier(at=NOW + WINDOW).refusal(signed(), PATH, BODY) is None
    assert verifier(at=NOW - WINDOW).refusal(signed(), PATH, BODY) is None


SIG = "0" * 64
FULL_WIDTH = {ord("0") + i: 0xFF10 + i for i in range(10)}  # to FULLWIDTH DIGIT ZERO to NINE


def malformed(now: int) -> dict[str, str]:
    """Headers that are no signature at all, whatever their size, by what is wrong with them;
    ``now`` is the time of those whose time is well formed."""
    return {
        "400-digit time": f"RPC-HMAC-SHA256 t={'9' * 400},sig={SIG}",  # too large for a float
        "5000-digit time": f"RPC-HMAC-SHA256 t={'9' * 5000},sig={SIG}",  # too long for int()
        "12-digit time": f"RPC-HMAC-SHA256 t={now}00,sig={SIG}",
        "no time": f"RPC-HMAC-SHA256 t=,sig={SIG}",
        "decimal time": f"RPC-HMAC-SHA256 t={now}.5,sig={SIG}",
        "full-width digits": f"RPC-HMAC-SHA256 t={str(now).translate(FULL_WIDTH)},sig={SIG}",
        "non-ASCII signature": f"RPC-HMAC-SHA256 t={now},sig={'é' * 64}",
        "non-hex signature": f"RPC-HMAC-SHA256 t={now},sig={'g' * 64}",
        "short signature": f"RPC-HMAC-SHA256 t={now},sig={SIG[:-1]}",
        "no signature": f"RPC-HMAC-SHA256 t={now}",
    }


MALFORMED = list(malformed(0))
MALFORMED_REFUSAL = "Authorization must be RPC-HMAC-SHA256 t=<unix seconds>,sig=<64 hex digits>"


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_header_is_refused_for_its_form(case: str) -> None:
    """A header that is no signature, of any size, is refused as malformed, never with an error."""
    assert verifier().refusal(malformed(int(NOW))[case], PATH, BODY) == MALFORMED_REFUSAL


@pytest.fixture
async def guarded_logging(aiohttp_server: AiohttpServer) -> TestServer:
    """The real logging app with RPC_SECRET set."""
    return await aiohttp_server(create_logging(LoggingSettings(rpc_secret=SECRET)))


@pytest.mark.parametrize("auth", [None, "guess"], ids=["no signature", "wrong secret"])
async def test_without_a_good_signature_logging_stores_nothing(
    guarded_logging: TestServer, aiohttp_client: AiohttpClient, auth: str | None
) -> None:
    """An unsigned or wrongly signed POST /rpc/log is a 401 error body, and nothing is stored."""
    client = await aiohttp_client(guarded_logging)  # type: ignore[arg-type]
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers.update(Signer(auth).headers(PATH, BODY))
    resp = await client.post(PATH, data=BODY, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "RPC-HMAC-SHA256"
    assert (await resp.json())["error"]["type"] == "Unauthorized"
    assert stored(guarded_logging) == []


@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_header_is_a_401_error_body(
    guarded_logging: TestServer, aiohttp_client: AiohttpClient, case: str
) -> None:
    """The RPC server answers a malformed Authorization with its usual 401, and stores nothing."""
    client = await aiohttp_client(guarded_logging)  # type: ignore[arg-type]
    header = malformed(int(time.time()))[case]
    resp = await client.post(PATH, data=BODY, headers={"Content-Type": "application/json", HEADER: header})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "RPC-HMAC-SHA256"
    assert (await resp.json())["error"] == {"type": "Unauthorized", "message": MALFORMED_REFUSAL,
                                            "args": [MALFORMED_REFUSAL]}
    assert stored(guarded_logging) == []


async def test_health_needs_no_signature(guarded_logging: TestServer,
                                         aiohttp_client: AiohttpClient) -> None:
    """/health stays open, so a supervisor can probe a service without the secret."""
    client = await aiohttp_client(guarded_logging)  # type: ignore[arg-type]
    assert (await client.get("/health")).status == 200


async def test_a_facade_with_the_secret_works_end_to_end(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, guarded_logging: TestServer
) -> None:
    """With the same RPC_SECRET on all three, POST and GET work as without one."""
    messages = await aiohttp_server(create_messages(MessagesSettings(rpc_secret=SECRET)))
    facade = await aiohttp_client(create_facade(FacadeSettings(
        rpc_secret=SECRET, logging_url=str(guarded_logging.make_url("")).rstrip("/"),
        messages_url=str(messages.make_url("")).rstrip("/"))))
    assert (await facade.post("/facade", json={"msg": "signed"})).status == 200
    assert await (await facade.get("/facade")).json() == {"logs": ["signed"],
                                                          "message": "not implemented yet"}


async def test_a_facade_with_another_secret_gets_502_and_a_misconfiguration_log(
    aiohttp_client: AiohttpClient, guarded_logging: TestServer
) -> None:
    """A facade whose secret differs is refused by logging: every client gets 502 "misconfigured"
    (not its fault, not a transient outage: the breaker never opens on a refusal), the log says
    misconfiguration, and nothing is stored."""
    app = create_facade(FacadeSettings(
        rpc_secret="another", logging_url=str(guarded_logging.make_url("")).rstrip("/")))
    facade = await aiohttp_client(app)
    misconfigured = {"status": "failure", "message": "logging service refused the call (Unauthorized): "
                                                     "the services are misconfigured"}
    with capture_logs() as logs:
        for i in range(3 * FacadeSettings().breaker_min_calls):
            resp = await facade.post("/facade", json={"msg": f"refused-{i}"})
            assert (resp.status, await resp.json()) == (502, misconfigured)
    assert any(line["event"].endswith("misconfigured") and line["log_level"] == "error" for line in logs)
    assert not any(line["event"] == "circuit breaker state changed" for line in logs)
    assert stored(guarded_logging) == []


@pytest.mark.parametrize(("create", "settings"), [(create_logging, LoggingSettings),
                                                   (create_messages, MessagesSettings)],
                         ids=["logging", "messages"])
def test_an_rpc_port_beyond_loopback_needs_a_secret(create: Callable[[Any], web.Application],
                                                    settings: type[ServerSettings]) -> None:
    """Without RPC_SECRET an RPC app refuses a non-loopback HOST; with one it is built."""
    with pytest.raises(SettingsError, match=re.escape("HOST=0.0.0.0 would expose the RPC port")):
        create(settings(host="0.0.0.0"))
    create(settings(host="0.0.0.0", rpc_secret=SECRET))
    for loopback in ("127.0.0.1", "127.8.0.1", "::1", "localhost"):
        create(settings(host=loopback))


def test_the_facade_may_face_the_network_without_a_secret() -> None:
    """The facade serves no RPC: its public port beyond loopback needs no RPC secret."""
    create_facade(FacadeSettings(host="0.0.0.0"))


def test_protected_mode_stops_the_process_with_one_line() -> None:
    """The real logging process on HOST=0.0.0.0 without a secret prints one line and exits 2,
    before it binds anything."""
    done = subprocess.run([sys.executable, "-m", "logging_service"],
                          env={"HOST": "0.0.0.0", "LOGGING_PORT": "0"},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("logging: configuration error: HOST=0.0.0.0 would expose the RPC port to "
                           "the network without authentication: set RPC_SECRET (the same on every "
                           "service) or bind 127.0.0.1\n")

