"""tools/benchmark.py: what it pins (Binder shares one CPU between the client and the kernel's tree) and
which of its two measures the budget judges. No chapter runs here: run_chapter is replaced by a stub."""
import os
import threading
import time

import psutil
import pytest

from conftest import load_tool

benchmark = load_tool("benchmark")
needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                    reason="needs Linux CPU affinity and two CPUs to tell pinned from not")


def affinities() -> dict[int, set[int]]:
    return {tid: os.sched_getaffinity(tid) for tid in benchmark.thread_ids()}


@needs_affinity
def test_pinned_client_pins_every_thread_old_and_new_and_restores_them():
    before = os.sched_getaffinity(0)
    one = {min(before)}
    stop = threading.Event()
    earlier = threading.Thread(target=stop.wait, daemon=True)
    earlier.start()                                   # a thread that exists before pinning (zmq's, say)
    seen_inside = {}
    with benchmark.pinned_client(one):
        later = threading.Thread(target=lambda: seen_inside.update(later=os.sched_getaffinity(0)))
        later.start(), later.join()                   # a thread started while pinned inherits it
        assert all(cpus == one for cpus in affinities().values())
    assert seen_inside["later"] == one
    assert all(cpus == before for cpus in affinities().values())
    stop.set()


def test_pinned_client_without_cpus_changes_nothing():
    before = affinities() if hasattr(os, "sched_getaffinity") else {}
    with benchmark.pinned_client(None):
        pass
    assert (affinities() if hasattr(os, "sched_getaffinity") else {}) == before


@pytest.fixture
def stub_runs(monkeypatch):
    """run_chapter replaced: it reports the seconds given for its run, and whether the client was pinned."""
    calls = []

    def fake_run(path, cpus, timeout, seconds):
        pinned = hasattr(os, "sched_getaffinity") and os.sched_getaffinity(0) == cpus
        calls.append(pinned)
        row = benchmark.Row(chapter=path.stem, seconds=seconds[len(calls) - 1], peak_mb=100 * len(calls))
        row.verdict = benchmark.verdict(row)
        return row

    def install(*seconds):
        monkeypatch.setattr(benchmark, "run_chapter", lambda p, c, t: fake_run(p, c, t, seconds))
        return calls
    return install


@needs_affinity
def test_both_runs_kernel_pinned_then_all_pinned_and_the_budget_judges_all(stub_runs, tmp_path):
    cpus = {min(os.sched_getaffinity(0))}
    calls = stub_runs(50.0, benchmark.BUDGET_SECONDS + 5.0)   # kernel-only within budget, Binder's over
    row = benchmark.measure(tmp_path / "01_x.ipynb", cpus, 60, "both")
    assert calls == [False, True]                  # the client is pinned only for the second run
    assert (row.kernel_seconds, row.seconds) == (50.0, benchmark.BUDGET_SECONDS + 5.0)
    assert row.verdict.startswith("OVER") and row.peak_mb == 200
    assert f"| {benchmark.BUDGET_SECONDS + 5.0:.1f} | 50.0 |" in benchmark.table([row])


def test_kernel_alone_runs_once_and_reports_no_second_measure(stub_runs, tmp_path):
    calls = stub_runs(42.0)
    row = benchmark.measure(tmp_path / "01_x.ipynb", None, 60, "kernel")
    assert len(calls) == 1 and row.kernel_seconds is None and row.verdict == "PASS"
    assert "| 42.0 | - |" in benchmark.table([row])


def test_a_failure_in_the_kernel_only_run_is_not_hidden(stub_runs, tmp_path, monkeypatch):
    calls = []

    def fake_run(path, cpus, timeout):
        calls.append(1)
        row = benchmark.Row(chapter=path.stem, seconds=10.0, error="" if len(calls) == 2 else "ValueError: boom")
        row.verdict = benchmark.verdict(row)
        return row
    monkeypatch.setattr(benchmark, "run_chapter", fake_run)
    row = benchmark.measure(tmp_path / "01_x.ipynb", None, 60, "both")
    assert row.verdict == "FAIL" and "boom" in row.error


def test_chapter_thirteen_keeps_its_own_stated_budget_and_every_other_gets_sixty():
    assert benchmark.BUDGET_SECONDS == 60
    assert benchmark.budget_seconds("chapters/12_drift_and_retraining.ipynb") == 60
    assert benchmark.budget_seconds("chapters/13_the_whole_loop.ipynb") == 130


def test_repeat_judges_the_median_and_prints_the_range(stub_runs, tmp_path):
    slow = benchmark.BUDGET_SECONDS + 9.0
    calls = stub_runs(slow, 53.0, 55.0)               # one noisy run over the budget, two within
    row = benchmark.measure(tmp_path / "01_x.ipynb", None, 60, "all", repeat=3)
    assert len(calls) == 3 and row.seconds == 55.0 and row.runs == [slow, 53.0, 55.0]
    assert row.verdict == "PASS" and row.peak_mb == 300
    assert f"| 55.0 (53.0-{slow:.1f}) | - |" in benchmark.table([row])


@needs_affinity
def test_the_sampler_pins_a_new_process_and_lists_threads_only_when_their_count_changes(monkeypatch):
    import subprocess
    import sys

    one = {min(os.sched_getaffinity(0))}
    child = subprocess.Popen([sys.executable, "-c", "import sys, threading, time\n"
                              "sys.stdin.readline()\n"
                              "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
                              "time.sleep(60)"], stdin=subprocess.PIPE, text=True)
    try:
        sampler = benchmark.TreeSampler(os.getpid(), one)
        listed = []
        real_pin = sampler.pin
        monkeypatch.setattr(sampler, "pin", lambda proc: (listed.append(proc.pid), real_pin(proc)))
        sampler.sample()
        assert os.sched_getaffinity(child.pid) == one
        sampler.sample()
        assert listed.count(child.pid) == 1, "an unchanged process is not listed again"
        child.stdin.write("go\n"), child.stdin.flush()
        for _ in range(50):                       # the child starts a thread
            if psutil.Process(child.pid).num_threads() == 2:
                break
            time.sleep(0.05)
        sampler.sample()
        assert listed.count(child.pid) == 2, "a new thread is looked at"
        assert all(os.sched_getaffinity(t.id) == one for t in psutil.Process(child.pid).threads())
    finally:
        child.kill()
        child.wait()
