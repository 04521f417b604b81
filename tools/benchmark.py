"""THE benchmark: each chapter's wall time and peak memory, against the book's budget.

    python tools/benchmark.py [chapters/01_maturity_levels.ipynb ...] [--cores 1] [--pin both] [--repeat 1]
                                                [--json FILE]

Runs every chapter in ``_toc.yml`` (or the notebooks given), one at a time, each in a fresh kernel started
in the chapter's folder, on one core by default. On Binder the kernel, every process it starts *and* the
Jupyter client that drives it share that one CPU, so ``--pin`` chooses what is pinned:

``all``     the whole tree: this process (the notebook client, as Jupyter's server on Binder) and the kernel
            with every descendant. This is Binder's measure, and the one the budget judges.
``kernel``  only the kernel's tree; the client runs on another core (what a laptop with spare cores sees).
``both``    (default) each chapter twice, ``kernel`` then ``all``, and both times reported.

``--repeat N`` runs each N times per pinning and judges the median (the range is printed): on a shared host the
same chapter took 62 s and 53 s in two consecutive runs, so one run cannot judge a 60 s budget.

A thread samples every 0.1 s the summed RSS of the kernel and all its descendants (the servers a chapter
starts). RSS counts pages shared between processes once per process, so the sum errs on the high side. The
budget: at most 60 s and 1.5 GB (1536 MB) a chapter on the ``all`` measure; the exit status is non-zero if
any chapter is over budget, fails, or leaves a process running after its kernel has gone (such processes are
reported and stopped).

Prints a Markdown table; ``--json FILE`` also writes the rows. Speed is measured here, never in timed tests.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError


def _sibling(name: str):
    """``tools/<name>.py`` as a module named ``tools_<name>``: imported as plain ``student_edition`` it would
    shadow the Sphinx extension of that name (tools/sphinx/student_edition.py) in a process that has both."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", Path(__file__).resolve().parent / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_edition = _sibling("student_edition")
ROOT, toc_notebooks = _edition.ROOT, _edition.toc_notebooks   # the shared _toc.yml reader

BUDGET_SECONDS = 60
BUDGET_MB = 1536
# A chapter with a budget of its own, and why (the issue that asked for it allows one, stated and measured).
# Chapter 13 runs the whole loop: a pull request's eight CI steps under act (35 s of one core), the project's
# first `dvc repro` (15 s), a Prefect server and two pipeline runs, two model servers, the router and the
# monitoring stack (14 s to start, Prometheus's discovery included), a canary (12 s). Measured 2026-11-30 on
# one core: 91, 94 and 101 s here, 109 s with every child process pinned from its start (taskset); the budget
# is the largest plus 20 %.
SECONDS_EXCEPTIONS = {"13_the_whole_loop": 130}


def budget_seconds(chapter: str) -> int:
    return SECONDS_EXCEPTIONS.get(Path(chapter).stem, BUDGET_SECONDS)
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@dataclass
class Row:
    chapter: str
    seconds: float = 0.0          # the budget's measure: the whole tree pinned (or the only run made)
    kernel_seconds: float | None = None   # with --pin both: only the kernel's tree pinned
    runs: list[float] = field(default_factory=list)   # with --repeat: each run's seconds (``seconds`` is the median)
    peak_mb: float = 0.0
    verdict: str = "FAIL"
    error: str = ""
    leftovers: list[str] = field(default_factory=list)


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants; pins every thread it sees to ``cpus``."""

    def __init__(self, pid: int, cpus: set[int] | None, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.cpus, self.interval = psutil.Process(pid), cpus, interval
        self.peak_bytes, self.seen, self.pinned, self.thread_counts = 0, {}, set(), {}
        self.done, self.lock = threading.Event(), threading.Lock()

    def family(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pin(self, proc: psutil.Process) -> None:
        if not self.cpus or not hasattr(os, "sched_setaffinity"):
            return
        try:  # sched_setaffinity acts on one thread: pin each (new threads and children inherit it)
            for thread in proc.threads():
                if thread.id not in self.pinned:
                    os.sched_setaffinity(thread.id, self.cpus)
                    self.pinned.add(thread.id)
        except (psutil.Error, OSError):
            pass

    def pin_new_threads(self, proc: psutil.Process) -> None:
        """Pin a process's threads when it is new or its thread count changed. Listing every thread of every
        process on each sample cost 2.4 ms of the 4.9 ms a sample took (75 processes, 8 in the tree), 2 % of
        the one core the chapter is measured on; a thread count is one small read."""
        try:
            count = proc.num_threads()
        except psutil.Error:
            return
        if self.thread_counts.get(proc.pid) != count:
            self.thread_counts[proc.pid] = count
            self.pin(proc)

    def sample(self) -> None:
        with self.lock:
            total = 0
            for proc in self.family():
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
                self.seen.setdefault(proc.pid, proc)
                self.pin_new_threads(proc)
            self.peak_bytes = max(self.peak_bytes, total)

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def leftovers(self, grace: float = 3.0) -> list[str]:
        """Descendants still running after the kernel has gone: stop them, and name them."""
        others = [proc for pid, proc in self.seen.items() if pid != self.root.pid]
        _, alive = psutil.wait_procs(others, timeout=grace)
        names = []
        for proc in alive:
            try:
                names.append(" ".join(proc.cmdline())[:80] or proc.name())
                proc.kill()
            except psutil.Error:
                pass
        return names


def thread_ids() -> list[int]:
    """Every thread of this process (sched_setaffinity acts on one thread at a time)."""
    return [thread.id for thread in psutil.Process().threads()]


@contextlib.contextmanager
def pinned_client(cpus: set[int] | None):
    """Pin this process, every thread it has and every one it starts, to ``cpus``; restore on exit."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    for tid in thread_ids():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for tid in thread_ids():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, before)


def kernel_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **QUIET_ENV, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def run_chapter(path: Path, cpus: set[int] | None, timeout: int) -> Row:
    """Execute one notebook in a fresh kernel, measuring it."""
    row = Row(chapter=str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    samplers: list[TreeSampler] = []

    def on_start(**_):
        sampler = TreeSampler(client.km.provisioner.pid, cpus)
        sampler.sample()  # pin the kernel before its first cell
        sampler.start()
        samplers.append(sampler)

    def on_cell(**_):  # also sample at the end of each cell, so a short-lived process is seen
        for sampler in samplers:
            sampler.sample()

    client.on_notebook_start, client.on_cell_executed = on_start, on_cell
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError) as error:
        row.error = first_line(error)
    finally:
        row.seconds = time.perf_counter() - start
        for sampler in samplers:
            sampler.stop()
            row.peak_mb = sampler.peak_bytes / 2**20
            row.leftovers = sampler.leftovers()
    row.verdict = verdict(row)
    return row


def first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # the exception line of the cell's traceback, if there is one
        if "Error" in line or "Exception" in line:
            return line.strip()[:200]
    return (lines[-1] if lines else type(error).__name__)[:200]


def verdict(row: Row) -> str:
    if row.error:
        return "FAIL"
    if row.leftovers:
        return "LEFTOVER"
    limit = budget_seconds(row.chapter)
    over = [f"{row.seconds:.0f} s > {limit} s"] if row.seconds > limit else []
    over += [f"{row.peak_mb:.0f} MB > {BUDGET_MB} MB"] if row.peak_mb > BUDGET_MB else []
    return f"OVER ({'; '.join(over)})" if over else "PASS"


def table(rows: list[Row]) -> str:
    lines = [f"| chapter | wall s, all pinned | wall s, kernel pinned | peak MB "
             f"| budget ({BUDGET_SECONDS} s unless stated, {BUDGET_MB} MB) |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r.chapter} | {r.seconds:.1f}{f' ({min(r.runs):.1f}-{max(r.runs):.1f})' if len(r.runs) > 1 else ''} | "
              f"{'-' if r.kernel_seconds is None else f'{r.kernel_seconds:.1f}'} | {r.peak_mb:.0f} | {r.verdict}"
              f"{f' (own budget {budget_seconds(r.chapter)} s)' if budget_seconds(r.chapter) != BUDGET_SECONDS else ''} |"
              for r in rows]
    for r in rows:
        if r.error:
            lines.append(f"\n{r.chapter}: {r.error}")
        if r.leftovers:
            lines.append(f"\n{r.chapter}: left running after its kernel exited (now stopped): "
                         + "; ".join(r.leftovers))
    return "\n".join(lines)


def repeated(path: Path, cpus: set[int] | None, timeout: int, repeat: int, pin_client: bool) -> Row:
    """``repeat`` runs of one chapter merged: the median seconds (every run's in ``runs``), the largest peak,
    the first failure or leftover."""
    rows = []
    for _ in range(repeat):
        with pinned_client(cpus if pin_client else None):
            rows.append(run_chapter(path, cpus, timeout))
    merged = Row(chapter=rows[0].chapter, seconds=statistics.median(r.seconds for r in rows),
                 peak_mb=max(r.peak_mb for r in rows), runs=[round(r.seconds, 1) for r in rows])
    failed = next((r for r in rows if r.error or r.leftovers), None)
    if failed:
        merged.error, merged.leftovers = failed.error, failed.leftovers
    merged.verdict = verdict(merged)
    return merged


def measure(path: Path, cpus: set[int] | None, timeout: int, pin: str, repeat: int = 1) -> Row:
    """One chapter's row: the whole tree pinned (``all``), only the kernel (``kernel``), or both."""
    if pin == "kernel":
        return repeated(path, cpus, timeout, repeat, pin_client=False)
    kernel_only = repeated(path, cpus, timeout, repeat, pin_client=False) if pin == "both" else None
    row = repeated(path, cpus, timeout, repeat, pin_client=True)
    if kernel_only is not None:
        row.kernel_seconds = kernel_only.seconds
        row.peak_mb = max(row.peak_mb, kernel_only.peak_mb)
        if kernel_only.verdict != "PASS" and row.verdict == "PASS":
            row.error, row.leftovers = kernel_only.error, kernel_only.leftovers
            row.verdict = verdict(row)
    return row


def pick_cpus(cores: int) -> set[int] | None:
    if cores <= 0 or not hasattr(os, "sched_getaffinity"):
        return None
    return set(sorted(os.sched_getaffinity(0))[:cores])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapters to run (default: all in _toc.yml)")
    parser.add_argument("--cores", type=int, default=1, help="CPUs to pin to (0: no pinning)")
    parser.add_argument("--pin", choices=("all", "kernel", "both"), default="both",
                        help="pin the whole tree, client included (Binder), only the kernel's, or run both")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per chapter and pinning; the budget judges the median (a shared host's noise "
                             "moved one chapter's time by 9 s between two consecutive runs)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)
    notebooks = [p.resolve() for p in args.notebooks] or [ROOT / p for p in toc_notebooks(ROOT)]
    cpus = pick_cpus(args.cores)
    print(f"benchmark: {len(notebooks)} chapter(s), pinned ({args.pin}) to CPU(s) {sorted(cpus) if cpus else 'any'}",
          file=sys.stderr)
    rows = []
    for path in notebooks:
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        rows.append(measure(path, cpus, args.timeout, args.pin, args.repeat))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0 if all(r.verdict == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
