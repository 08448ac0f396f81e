"""CPU threads: the first choice from the idle cores, and the re-check that keeps a load seen
only at start from fixing a run's count (fake CPU counters and clocks, no timing)."""

import os

import pytest

from vidiff.utils import threads
from vidiff.utils.threads import CpuCounters, ThreadCount, others_busy, threads_for


def test_auto_threads_are_the_free_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    for busy, processes, expected in [(0.0, 1, 16), (3.6, 1, 12), (3.6, 4, 3), (15.8, 1, 1),
                                      (40.0, 1, 1), (0.0, 64, 1)]:
        monkeypatch.setattr(threads, "busy_cores", lambda busy=busy: busy)
        assert threads.auto_threads(processes) == expected, (busy, processes)


def test_busy_cores_reads_the_cpu_counters_not_the_load_average(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 4.0, 4.0))  # a job that just ended
    # 100 of 400 jiffies busy: 1 of 4 cores
    counters = iter([CpuCounters(1000, 4000, 0.0), CpuCounters(1100, 4400, 0.0)])
    monkeypatch.setattr(threads, "read_counters", lambda: next(counters))
    assert threads.busy_cores(window_s=0) == pytest.approx(1.0)
    monkeypatch.setattr(threads, "read_counters", lambda: None)  # no /proc/stat: load average
    assert threads.busy_cores(window_s=0) == 4.0
    monkeypatch.setattr(os, "getloadavg", lambda: (_ for _ in ()).throw(OSError()))
    assert threads.busy_cores(window_s=0) == 0.0 and threads.auto_threads() == 4


def test_the_other_processes_load_leaves_out_this_process_own():
    before = CpuCounters(busy=0, total=0, own=0.0)
    # 10 s on 2 cores (2000 jiffies): all busy, 15 s of it this process's (1.5 cores)
    after = CpuCounters(busy=2000, total=2000, own=15.0)
    assert others_busy(before, after, 10.0, cores=2) == pytest.approx(0.5)
    # this process alone keeps both cores busy: nobody else is
    assert others_busy(before, CpuCounters(2000, 2000, 20.0), 10.0, cores=2) == 0.0
    # 4 processes of one run on 16 cores, each 2 cores: 8 of the 12 busy cores are the run's
    assert others_busy(before, CpuCounters(1200, 1600, 20.0), 10.0, 16, 4) == pytest.approx(4)
    assert others_busy(before, before, 10.0, cores=2) is None  # no time passed
    assert threads_for(2, 0.5) == 2 and threads_for(2, 0.6) == 1 and threads_for(16, 4, 4) == 3


class FakeMachine:
    """A 2-core machine's counters: `other` cores busy with other work, `own` cores with
    this process, advanced by `run(seconds)`."""

    def __init__(self, other: float, own: float = 0.0):
        self.now, self.busy, self.total, self.cpu = 0.0, 0.0, 0.0, 0.0
        self.other, self.own, self.reads, self.applied = other, own, 0, []

    def run(self, seconds: float) -> None:
        self.now += seconds
        self.total += 2 * 100 * seconds  # 100 jiffies a second per core
        self.busy += min(2.0, self.other + self.own) * 100 * seconds
        self.cpu += self.own * seconds

    def read(self) -> CpuCounters:
        self.reads += 1
        return CpuCounters(int(self.busy), int(self.total), self.cpu)

    def count(self, fixed: int = 0, choose=None) -> ThreadCount:
        return ThreadCount(fixed, every_s=10.0, cores=2, read=self.read, clock=lambda: self.now,
                           choose=choose or (lambda processes: 1), apply=self.applied.append)


def test_a_load_only_at_start_costs_one_interval_not_the_run():
    machine = FakeMachine(other=0.0, own=1.0)  # the spike at start is gone: this run alone
    count = machine.count(choose=lambda processes: 1)  # the start window saw the spike
    assert count.count == 1 and machine.applied == [1]
    machine.run(9.0)
    assert count.poll() is None and count.count == 1  # not yet due: only a clock read
    machine.run(1.0)
    assert count.poll() == 2 and count.count == 2 and machine.applied == [1, 2]
    machine.own = 2.0
    for _ in range(5):  # its own two threads do not count as load
        machine.run(10.0)
        assert count.poll() is None and count.count == 2


def test_a_persistent_load_keeps_the_count_and_a_new_one_lowers_it():
    machine = FakeMachine(other=1.0, own=1.0)  # another job on one of the two cores
    count = machine.count(choose=lambda processes: 1)
    for _ in range(3):
        machine.run(10.0)
        assert count.poll() is None and count.count == 1
    machine.other = 0.0
    machine.run(10.0)
    assert count.poll() == 2
    machine.other, machine.own = 0.9, 1.1  # a new job arrives and takes its share
    machine.run(10.0)
    assert count.poll() == 1 and machine.applied == [1, 2, 1]


def test_a_set_count_is_used_as_it_is():
    machine = FakeMachine(other=2.0)
    count = machine.count(fixed=3, choose=lambda processes: pytest.fail("no choice to make"))
    machine.run(100.0)
    assert count.poll() is None and count.count == 3 and machine.applied == [3]
    assert machine.reads == 0 and not count.auto
    assert count.describe() == "3 CPU threads"
    auto = machine.count(choose=lambda processes: 1)
    assert auto.describe() == "1 CPU thread (the idle cores, re-checked every 10 s)"


def test_no_cpu_counters_keeps_the_first_choice():
    count = ThreadCount(0, every_s=1.0, cores=4, read=lambda: None, clock=iter(range(0, 99, 5))
                        .__next__, choose=lambda processes: 3, apply=lambda n: None)
    assert count.poll() is None and count.poll() is None and count.count == 3
