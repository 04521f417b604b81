"""Checks for chapter 11: monitoring a model in production."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..checks import check_number
from ..monitoring import histogram_quantile, join_labels, wilson_interval


def check_p95(answer, buckets: pd.Series) -> None:
    expected = histogram_quantile(0.95, buckets)
    check_number("ex-11-1", answer, expected, tolerance=0.01,
                 why=f"rank 95 of 100 falls in the (20, 50] ms bucket, which holds ranks 91-100; Prometheus "
                     f"assumes they are spread evenly, so p95 is half way: {expected:g} ms.",
                 hint="find the first bucket whose cumulative count reaches 95, then interpolate linearly inside it.")


def labels_needed(accuracy: float = 0.85, half_width: float = 0.02) -> int:
    n = np.arange(10, 20_000)
    low, high = wilson_interval(accuracy * n, n)
    return int(n[(high - low) / 2 <= half_width][0])


def check_labels_needed(answer) -> None:
    expected = labels_needed()
    check_number("ex-11-2", answer, expected, tolerance=2,
                 why=f"about {expected} labelled applications: the half-width shrinks like 1/sqrt(n), so halving it "
                     f"takes four times the labels. A week with fewer cannot tell a 2-point drop from noise.",
                 hint="evaluate wilson_interval(0.85 * n, n) for n = 100, 101, ... and take the first n whose "
                      "(high - low) / 2 is at most 0.02.")


def check_coverage(answer, predictions: pd.DataFrame, labels: pd.DataFrame, as_of) -> None:
    expected = float(join_labels(predictions, labels, as_of=as_of)["label"].notna().mean())
    check_number("ex-11-3", answer, expected, tolerance=0.002,
                 why=f"{expected:.1%} of the captured predictions had a label by then: everything scored in the "
                     f"last four weeks was still waiting for its outcome.",
                 hint="join_labels(predictions, labels, as_of=...)['label'].notna().mean()")
