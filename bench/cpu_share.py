"""Who used the machine's CPU while a benchmark worker ran: the worker, the ``--contention`` processes, or
other jobs (``/proc/stat``, Linux; None elsewhere).

The load average cannot tell these apart (it counts the benchmark's own threads), and a figure measured
while other jobs ran is not comparable with one from an idle machine, so every figure carries the share
of the CPUs that other jobs took during it.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class CpuSample:
    """Clock ticks since boot: all CPUs together (``total``) and idle among them; this process with its
    finished children (``own``); the running ``--contention`` processes (``contention``)."""

    total: int
    idle: int
    own: float
    contention: float


def _machine_ticks() -> tuple[int, int]:
    """(all ticks, idle + iowait ticks) of the machine from the first line of ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(field) for field in stat.readline().split()[1:]]
    return sum(values), values[3] + (values[4] if len(values) > 4 else 0)


def process_ticks(pid: int) -> int:
    """User + system ticks of a running process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_sample(contention_pids: Iterable[int] = ()) -> CpuSample | None:
    """The machine's ticks, this process tree's and those of ``contention_pids`` (running processes)."""
    try:
        total, idle = _machine_ticks()
    except (OSError, ValueError, IndexError):
        return None
    hertz = os.sysconf("SC_CLK_TCK")
    own = sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                            resource.getrusage(resource.RUSAGE_CHILDREN)))
    return CpuSample(total, idle, own * hertz, float(sum(process_ticks(pid) for pid in contention_pids)))


def cpu_shares(start: CpuSample | None, end: CpuSample | None) -> dict[str, float] | None:
    """Shares of all CPU time between two samples, each in [0, 1]: ``other`` (processes outside this tree:
    busy - own - contention) and ``contention`` (the ``--contention`` processes). None when a sample is
    missing or no time passed. Take ``end`` after the measured worker was waited for (its time counts then).
    """
    if start is None or end is None or end.total <= start.total:
        return None
    elapsed = end.total - start.total
    busy = elapsed - (end.idle - start.idle)
    contention = end.contention - start.contention
    other = busy - (end.own - start.own) - contention

    def share(ticks: float) -> float:
        return round(min(max(ticks / elapsed, 0.0), 1.0), 3)

    return {"other": share(other), "contention": share(contention)}
