"""What the benchmark ran on: CPU, cores, Python, library versions and the load tool."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """A one-line-per-field description of the machine and software under test."""

    cpu: str
    cores: int
    python: str
    libraries: str
    load_tool: str
    date: str


def describe(load_tool: str) -> Machine:
    """Describe this machine; ``load_tool`` says which load generator drove the endpoints."""
    return Machine(
        cpu=cpu_model(),
        cores=usable_cores(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        libraries=", ".join(f"{name} {_version(name)}" for name in ("aiohttp", "uvloop", "orjson")),
        load_tool=load_tool,
        date=datetime.date.today().isoformat(),
    )


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` in ``/proc/cpuinfo``, else whatever the platform reports."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which a container may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"
