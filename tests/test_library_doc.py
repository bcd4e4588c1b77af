"""docs/library.md: its examples run as they are written, and its API reference names every public name."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import resilience
from resilience.observability.logs import configure_logging
from resilience.testing.nats_server import NatsCluster

DOCS = Path(__file__).resolve().parent.parent / "docs"
# An example is the fenced python block right after its marker comment.
EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)\n```", re.S)


def examples() -> dict[str, str]:
    """The marked examples of docs/library.md, by name; a name marked twice fails."""
    found = [(m["name"], m["code"]) for m in EXAMPLE.finditer((DOCS / "library.md").read_text())]
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"an example is marked twice: {names}"
    return dict(found)


def run(name: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute the example ``name`` in ``namespace`` (a fresh one by default), not as a script."""
    namespace = {"__name__": f"library_example_{name}"} if namespace is None else namespace
    # dont_inherit: the example runs as written, not under this module's ``__future__`` imports.
    code = compile(examples()[name], f"docs/library.md:{name}", "exec", dont_inherit=True)
    exec(code, namespace)
    return namespace


def test_the_doc_marks_its_four_examples() -> None:
    """Each marker is followed by a python block, and none is missing."""
    text = (DOCS / "library.md").read_text()
    assert text.count("<!-- example: ") == len(examples()) == 4


async def test_the_service_example_calls_through_the_policy(restore_logging: None) -> None:
    """The front app gets the greeting, echoes the client's ID, and the breaker counts one success."""
    out = io.StringIO()
    configure_logging("library-doc", "json", "info", stream=out)

    result = await run("service")["main"]()

    assert result["body"] == {"greeting": "hello, Ada"}
    assert result["correlation_id"] == "demo-42"
    assert result["breaker_calls"] == {"successful": 1, "failed": 0, "ignored": 0,
                                       "not_permitted": 0}
    assert ('circuitbreaker_calls_total{kind="successful",name="greeter.call"} 1.0'
            in result["metrics"])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    greeted = [line for line in lines if line.get("path") == "/rpc/greet"]
    assert [(line["status"], line["correlation_id"]) for line in greeted] == [(200, "demo-42")]


async def test_the_events_example_keeps_each_order_once(nats_cluster: NatsCluster) -> None:
    """On a real three-server NATS cluster: the order published twice under one ID is kept once."""
    assert await run("events")["main"](nats_cluster.urls.split(",")) == {"o-1": "tea", "o-2": "cake"}


def test_the_settings_example_reads_its_environment() -> None:
    """The settings example's own assertion holds: fields of every piece are read from the mapping."""
    settings = run("settings")["settings"]
    assert settings.greeter_url == "http://127.0.0.1:8081"


async def test_the_testing_example_passes() -> None:
    """The testing example's test passes against the service example's class."""
    namespace = run("service")
    await run("testing", namespace)["test_greet"]()


def test_the_reference_names_every_public_name() -> None:
    """Each name of ``resilience.__all__`` is rendered on the API reference page."""
    reference = (DOCS / "reference.md").read_text()
    missing = [name for name in resilience.__all__
               if not re.search(rf"^\s+- {re.escape(name)}$", reference, re.M)]
    assert missing == []
