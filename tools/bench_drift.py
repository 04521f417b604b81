"""Micro-benchmark: the drift detectors on 100,000 rows x 20 features (target: well under a second).

    python tools/bench_drift.py [--rows 100000] [--repeat 5]

Fits a DriftDetector on a reference of ``rows`` rows and compares a window of ``rows`` rows with it (every
statistic for every feature: PSI, KS, chi-square, Jensen-Shannon, Wasserstein, L-infinity, corrected
p-values). Prints best and median wall times as a Markdown table, for 20 numeric features, for 16 numeric
plus 4 categorical ones, and for the credit simulator's own 11 features.
"""
from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np
import pandas as pd

from mlops_lab.drift import DriftDetector
from mlops_lab.simulator import CATEGORICAL, NUMERIC, CreditStream, Drift


def synthetic(rows: int, numeric: int, categorical: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"x{j}": rng.normal(shift * (j % 3), 1 + 0.1 * shift, rows) for j in range(numeric)}
    for j in range(categorical):
        p = np.array([0.4, 0.3, 0.2, 0.1]) + shift * np.array([-0.1, 0, 0, 0.1])
        data[f"c{j}"] = pd.Categorical.from_codes(rng.choice(4, rows, p=p), ["a", "b", "c", "d"])
    return pd.DataFrame(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.rows
    stream = CreditStream(seed=0, rows_per_month=n, drift=Drift(covariate=1.0, start_month=0))
    cases = {
        "20 numeric": (synthetic(n, 20, 0, 0, 1), synthetic(n, 20, 0, 0.2, 2), [f"x{j}" for j in range(20)], []),
        "16 numeric + 4 categorical": (synthetic(n, 16, 4, 0, 1), synthetic(n, 16, 4, 0.2, 2),
                                       [f"x{j}" for j in range(16)], [f"c{j}" for j in range(4)]),
        "credit simulator (9 numeric + 2 categorical)": (stream.month(0), stream.month(6), NUMERIC, CATEGORICAL),
    }
    print(f"\n| drift detectors, {n:,} reference rows vs {n:,} window rows | fit best s | compare best s "
          f"| compare median s |\n|---|---:|---:|---:|")
    for name, (reference, window, numeric, categorical) in cases.items():
        once = {"setup": "gc.enable()", "number": 1, "repeat": args.repeat}  # one call per timing, GC on as in use
        fits = timeit.repeat(lambda: DriftDetector(reference, numeric, categorical), **once)
        detector = DriftDetector(reference, numeric, categorical)
        compares = timeit.repeat(lambda: detector.compare(window), **once)
        print(f"| {name} | {min(fits):.3f} | {min(compares):.3f} | {statistics.median(compares):.3f} |")


if __name__ == "__main__":
    main()
