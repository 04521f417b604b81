"""Benchmark: what chapters 05 and 12 pay to rebuild the chapter-03 project (real git + DVC) on the clock.

    python tools/bench_dvc_project.py [--rows 2000] [--repeat 2]

Times ``build_credit_project`` as of 2024-04-01 (git init, dvc init, the default window of monthly
snapshots, four stages, push, tag), a no-op ``dvc repro``, and ``retrain`` a month later (every snapshot
rewritten as of 2024-05-01, one more month, repro, push, commit), each in a fresh temporary folder, and
prints a Markdown table. Most of the time is process start-up: each dvc command and each stage (pandas +
scikit-learn imports) costs about half a second to a second.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlops_lab.dvc_project import build_credit_project, default_months, retrain
from mlops_lab.shell import sh
from mlops_lab.simulator import CreditStream

AS_OF, LATER = "2024-04-01", "2024-05-01"


def once(rows: int) -> dict[str, float]:
    stream = CreditStream(seed=2024, rows_per_month=rows)
    with tempfile.TemporaryDirectory() as folder:
        seconds = {}
        start = time.perf_counter()
        repo = build_credit_project(Path(folder) / "credit", stream, as_of=AS_OF)
        seconds[f"build_credit_project (as of {AS_OF}, {len(default_months(AS_OF))} months)"] = (
            time.perf_counter() - start)
        start = time.perf_counter()
        sh("dvc repro", cwd=repo, echo=False)
        seconds["dvc repro, nothing changed"] = time.perf_counter() - start
        start = time.perf_counter()
        retrain(repo, stream, as_of=LATER)
        seconds[f"retrain (as of {LATER}: snapshots rewritten, one more month)"] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    runs = [once(args.rows) for _ in range(args.repeat)]
    print(f"\n| credit DVC project, {args.rows:,} rows a month | best s | median s |\n|---|---:|---:|")
    for step in runs[0]:
        values = [run[step] for run in runs]
        print(f"| {step} | {min(values):.1f} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
