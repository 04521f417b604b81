"""Micro-benchmark: the credit simulator generates one million rows (target: about a second).

    python tools/bench_simulator.py [--rows 1000000] [--repeat 5]

Prints the best and median wall time of ``CreditStream.month`` over a few repeats, with and without drift.
"""
from __future__ import annotations

import argparse
import statistics
import time

from mlops_lab.simulator import CreditStream, Drift


def time_month(stream: CreditStream, t: int, rows: int, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        stream.month(t, rows=rows)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {"no drift": CreditStream(seed=0),
             "covariate + label + concept drift": CreditStream(
                 seed=0, drift=Drift(covariate=1.0, label=0.5, concept=1.0, start_month=0))}
    print(f"\n| simulator, {args.rows:,} rows | best s | median s |\n|---|---:|---:|")
    for name, stream in cases.items():
        seconds = time_month(stream, t=6, rows=args.rows, repeat=args.repeat)
        print(f"| {name} | {min(seconds):.2f} | {statistics.median(seconds):.2f} |")


if __name__ == "__main__":
    main()
