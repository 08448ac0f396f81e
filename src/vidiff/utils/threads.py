"""How many CPU threads a process should use: the cores other processes leave idle, chosen at
start and re-checked during a run.

On a shared CPU, more threads than free cores makes every parallel region wait for
descheduled threads (a step can take 4x longer with 2 threads than with 1), so training and
the sampling commands size torch's thread pool to the cores not busy with other work. "Busy"
is measured from the kernel's CPU counters (``/proc/stat``, Linux), not from the 1-minute
load average, which still counts a job that ended seconds ago.

A first choice has to come from a short window at start (`WINDOW_S`), and a load that is
there only then (another job finishing, ``pip install``) would fix a whole run at too few
threads: on the 2-core machine the README's main job took 676 s instead of 330-360 s that
way. So a `ThreadCount` re-checks every `RECHECK_S` seconds, from what the *other* processes
used since the last check (all CPU time less this process's own, which its threads spend
whatever their number), and moves torch's thread count to the cores they left free: a spike
at start costs at most one interval. A count that is set (``train.threads``, ``--threads``)
is used as it is and never re-checked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CpuCounters", "ThreadCount", "auto_threads", "busy_cores", "read_counters",
           "threads_for"]

WINDOW_S = 0.25  # how long the first choice watches the CPU counters
RECHECK_S = 10.0  # how often a run re-checks the count (the CPU used since the last check)


@dataclass(frozen=True)
class CpuCounters:
    """The machine's CPU counters at one time (since boot) and this process's CPU time."""

    busy: int  # jiffies all CPUs spent busy (not idle, not waiting for I/O)
    total: int  # all jiffies of all CPUs
    own: float  # seconds of CPU this process used (all its threads)


def read_counters() -> CpuCounters | None:
    """The counters now, from /proc/stat and this process's CPU clock; None where
    /proc/stat cannot be read (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return CpuCounters(sum(values) - idle, sum(values), time.process_time())


def others_busy(before: CpuCounters, after: CpuCounters, seconds: float, cores: int,
                processes: int = 1) -> float | None:
    """Cores the other processes kept busy between two readings `seconds` apart: all busy
    cores less this process's own use, counted `processes` times (the run's other
    processes on this node use about as much); None when no time passed."""
    if after.total <= before.total or seconds <= 0:
        return None
    busy = cores * (after.busy - before.busy) / (after.total - before.total)
    own = (after.own - before.own) / seconds
    return max(0.0, busy - own * processes)


def threads_for(cores: int, busy: float, processes: int = 1) -> int:
    """Threads for one of `processes` processes when other work keeps `busy` cores busy:
    the free cores (rounded, at least 1) split between the processes; at least 1."""
    free = max(1, round(cores - busy)) if busy < cores else 1
    return max(1, free // max(1, processes))


def busy_cores(window_s: float = WINDOW_S) -> float:
    """The number of cores busy over the next `window_s` seconds (Linux: /proc/stat); where
    that cannot be read, the 1-minute load average; 0 where neither exists."""
    cores = os.cpu_count() or 1
    before = read_counters()
    if before is not None:
        time.sleep(window_s)
        after = read_counters()
        if after is not None and after.total > before.total:
            return cores * (after.busy - before.busy) / (after.total - before.total)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return 0.0


def auto_threads(processes: int = 1) -> int:
    """CPU threads for one of `processes` processes on this machine: the cores not busy now
    (`busy_cores`), split between them; at least 1."""
    return threads_for(os.cpu_count() or 1, busy_cores(), processes)


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class ThreadCount:
    """torch's CPU thread count for a run: `fixed` threads (> 0), or with ``fixed=0`` the free
    cores at start (`auto_threads`), re-checked by `poll` every `every_s` seconds.

    `poll` is cheap (a clock read) between checks; call it from the thread that runs the
    model (torch's count is per thread under OpenMP), e.g. once per training step. `read`,
    `clock`, `choose` and `apply` are the machine's by default (tests pass fakes).
    """

    def __init__(self, fixed: int = 0, processes: int = 1, *, every_s: float = RECHECK_S,
                 cores: int | None = None, read: Callable[[], CpuCounters | None] = read_counters,
                 clock: Callable[[], float] = time.monotonic,
                 choose: Callable[[int], int] = auto_threads,
                 apply: Callable[[int], None] = _set_torch_threads):
        self.fixed, self.processes, self.every_s = fixed, max(1, processes), every_s
        self.cores = cores or os.cpu_count() or 1
        self._read, self._clock, self._apply = read, clock, apply
        self.count = fixed if fixed > 0 else choose(self.processes)
        self._apply(self.count)
        self._mark()

    @property
    def auto(self) -> bool:
        """Whether the count is chosen (and re-checked) rather than set."""
        return self.fixed <= 0

    def _mark(self) -> None:
        self._since, self._counters = self._clock(), self._read() if self.auto else None

    def poll(self) -> int | None:
        """Re-check the count when `every_s` seconds have passed since the last check: the
        new count where it changed (and is applied), else None."""
        if not self.auto or self._clock() - self._since < self.every_s:
            return None
        before, seconds = self._counters, self._clock() - self._since
        self._mark()
        if before is None or self._counters is None:
            return None
        busy = others_busy(before, self._counters, seconds, self.cores, self.processes)
        if busy is None:
            return None
        count = threads_for(self.cores, busy, self.processes)
        if count == self.count:
            return None
        self.count = count
        self._apply(count)
        return count

    def describe(self) -> str:
        """How many threads, and how they were chosen: for the banners."""
        threads = f"{self.count} CPU thread{'s' if self.count != 1 else ''}"
        if not self.auto:
            return threads
        return f"{threads} (the idle cores, re-checked every {self.every_s:g} s)"
