"""How many CPU threads a process should use: the cores that are idle right now.

On a shared CPU, more threads than free cores makes every parallel region wait for
descheduled threads (a step can take 4x longer with 2 threads than with 1), so training and
the sampling commands size torch's thread pool to the idle cores. "Idle" is measured over a
short window from the kernel's CPU counters (``/proc/stat``, Linux), not from the 1-minute
load average, which still counts a job that ended seconds ago (``pip install`` before the
README's first run left it at 2 on 2 cores, and the run took 1 thread and twice the time).
"""

from __future__ import annotations

import os
import time

__all__ = ["auto_threads", "busy_cores"]

WINDOW_S = 0.25  # how long busy_cores watches the CPU counters


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busy_cores(window_s: float = WINDOW_S) -> float:
    """The number of cores busy over the next `window_s` seconds (Linux: /proc/stat); where
    that cannot be read, the 1-minute load average; 0 where neither exists."""
    cores = os.cpu_count() or 1
    before = _cpu_times()
    if before is not None:
        time.sleep(window_s)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            return cores * (after[0] - before[0]) / (after[1] - before[1])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return 0.0


def auto_threads(processes: int = 1) -> int:
    """CPU threads for one of `processes` processes on this machine: the cores not busy now
    (`busy_cores`), split between them; at least 1."""
    cores = os.cpu_count() or 1
    busy = busy_cores()
    free = max(1, round(cores - busy)) if busy < cores else 1
    return max(1, free // max(1, processes))
