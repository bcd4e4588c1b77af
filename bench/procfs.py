"""What Linux says about a process: resident memory and CPU time, from ``/proc/<pid>``."""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcError(RuntimeError):
    """The process is gone or ``/proc`` does not say what is needed."""


def vm_rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``VmRSS`` of ``/proc/<pid>/status``)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError as exc:
        raise ProcError(f"cannot read the memory of process {pid}: {exc}") from None
    raise ProcError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far (``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError as exc:
        raise ProcError(f"cannot read the CPU time of process {pid}: {exc}") from None
    # The command name (field 2) may contain spaces; the fields after its ")" are plain.
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
