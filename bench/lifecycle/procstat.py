"""CPU seconds and memory of processes, read from /proc (Linux only).

CPU is utime + stime of a process. PostgreSQL is many processes: the postmaster, its
background workers and one backend per connection. Its figure is the postmaster's own
time, plus the time of children it has already reaped (cutime + cstime: backends that
exited between two readings), plus every live child's time. Memory is VmRSS; for
PostgreSQL the sum of the processes' proportional set sizes (Pss), because its shared
buffers are mapped into every backend and a plain RSS sum would count them many times.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SERVICES = ("intake", "partners", "scheduling", "notifications")


@dataclass
class Processes:
    """Pids of everything whose CPU and memory the bench reports."""

    services: dict[str, int]
    nats: int
    postmaster: int
    loadgen: int = field(default_factory=os.getpid)


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may contain spaces; everything after its ")" splits cleanly.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of `pid` (plus its reaped children's) in seconds; 0 when it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    # After the ")": state is index 0, so utime (field 14) is index 11, cutime index 13.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def postgres_cpu_seconds(postmaster: int) -> float:
    """The postmaster, its reaped backends and its live children."""
    total = cpu_seconds(postmaster, reaped_children=True)
    for child in children(postmaster):
        total += cpu_seconds(child)
    return total


@dataclass(frozen=True)
class Memory:
    """Resident memory of one process (or, for PostgreSQL, of all its processes), MiB."""

    rss_mb: float
    peak_mb: float | None  # VmHWM: the highest RSS since the process started


def _status_kib(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def memory(pid: int) -> Memory:
    rss = _status_kib(pid, "VmRSS")
    peak = _status_kib(pid, "VmHWM")
    return Memory(
        rss_mb=round((rss or 0) / 1024, 1),
        peak_mb=round(peak / 1024, 1) if peak is not None else None,
    )


def _pss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def postgres_memory(postmaster: int) -> Memory:
    """Sum of Pss over the postmaster and its children (falls back to RSS when unreadable)."""
    total = 0
    for pid in [postmaster, *children(postmaster)]:
        pss = _pss_kib(pid)
        if pss is None:
            pss = _status_kib(pid, "VmRSS") or 0
        total += pss
    return Memory(rss_mb=round(total / 1024, 1), peak_mb=None)


def cpu_snapshot(procs: Processes) -> dict[str, float]:
    """CPU seconds so far of every reported process, by name."""
    snap = {name: cpu_seconds(pid) for name, pid in procs.services.items()}
    snap["nats-server"] = cpu_seconds(procs.nats)
    snap["postgres"] = postgres_cpu_seconds(procs.postmaster)
    snap["loadgen"] = cpu_seconds(procs.loadgen)
    return snap


def memory_snapshot(procs: Processes) -> dict[str, Memory]:
    """Memory of every reported process, by name."""
    snap = {name: memory(pid) for name, pid in procs.services.items()}
    snap["nats-server"] = memory(procs.nats)
    snap["postgres"] = postgres_memory(procs.postmaster)
    snap["loadgen"] = memory(procs.loadgen)
    return snap
