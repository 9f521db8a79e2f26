"""Reading our own child processes from /proc (Linux): which ones exist, their CPU time and memory, and a
sampler that keeps an eye on a child's memory while a benchmark runs.

The stdio client starts the server for us, so the benchmarks find its pid by parent and command line.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio


def child_pids(matches: Callable[[bytes], bool]) -> list[int]:
    """Children of this process whose NUL-separated command line satisfies `matches`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and matches(cmdline):
            found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak resident set since start) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


@dataclass
class MemoryWatch:
    """What `watch_memory` saw: the highest VmRSS sampled, and whether it had to kill the process."""

    peak_rss_mb: float = 0.0
    killed_at_mb: float | None = None


async def watch_memory(
    pid: int, watch: MemoryWatch, *, interval: float = 0.02, kill_above_mb: float | None = None
) -> None:
    """Sample `pid`'s resident set until it exits (or the caller cancels); SIGKILL it above the limit.

    The limit protects the machine from a process whose memory runs away: the sample that crosses it
    is the last one, and the report says "more than N MB" instead of waiting for the OOM killer.
    """
    while True:
        try:
            rss = memory_mb(pid).get("VmRSS")
        except OSError:
            return  # gone
        if rss is None:
            return  # a zombie: no memory left to measure
        watch.peak_rss_mb = max(watch.peak_rss_mb, rss)
        if kill_above_mb is not None and rss > kill_above_mb:
            watch.killed_at_mb = rss
            os.kill(pid, signal.SIGKILL)
            return
        await anyio.sleep(interval)
