"""Checks for chapter 11: monitoring a model in production."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..checks import check_number, not_attempted, verdict
from ..monitoring import auc_with_se, histogram_quantile, join_labels, wilson_interval
from ..simulator import OUTCOME_MONTHS, month_label, newest_complete_month


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


def coverage(predictions: pd.DataFrame, labels: pd.DataFrame, as_of) -> float:
    """The share of the predictions made by ``as_of`` whose label is known on ``as_of``."""
    as_of = pd.Timestamp(as_of)
    made = predictions[predictions["timestamp"] <= as_of]
    return float(join_labels(made, labels, as_of=as_of)["label"].notna().mean())


def check_coverage(answer, predictions: pd.DataFrame, labels: pd.DataFrame, as_of) -> None:
    expected = coverage(predictions, labels, as_of)
    everything = float(predictions["application_id"].isin(labels["application_id"]).mean())
    hint = "join_labels(made, feed, as_of=...)['label'].notna().mean(), with made = the predictions up to as_of."
    if not not_attempted(answer):
        try:
            wrong_denominator = float(answer) < expected * 0.75   # divided by the whole year's predictions
        except (TypeError, ValueError):
            wrong_denominator = False
        if wrong_denominator:
            hint = ("count only the predictions made by as_of: a prediction made later does not exist yet on "
                    "that date. " + hint)
    check_number("ex-11-3", answer, expected, tolerance=0.002,
                 why=f"{expected:.1%} of the predictions made by then had a label: everything scored in the last "
                     f"four months was still waiting for its outcome, and a declined applicant never gets one "
                     f"(even with every label in, at most {everything:.0%} of predictions are labelled).",
                 hint=hint)


def default_job(predictions: pd.DataFrame, labels: pd.DataFrame, run_date) -> float:
    """The reference job: AUC on the newest application month whose every label is known on ``run_date``."""
    run_date = pd.Timestamp(run_date)
    return _month_auc(predictions, labels, run_date, month_label(newest_complete_month(run_date)))


def _month_auc(predictions, labels, run_date, month: str) -> float:
    """The AUC of the predictions of ``month`` (e.g. '2024-03') whose label is known on ``run_date``."""
    made = predictions[(predictions["timestamp"] <= run_date)
                       & (predictions["timestamp"].dt.to_period("M") == pd.Period(month, freq="M"))]
    joined = join_labels(made, labels, as_of=run_date)
    rows = joined[joined["label"].notna()]
    return auc_with_se(rows["label"], rows["score"])[0] if len(rows) else float("nan")


RUN_DATES = ("2024-12-31", "2025-02-01", "2025-05-20", "2025-12-01")


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (not math.isnan(a) and not math.isnan(b) and abs(a - b) < 1e-9)


def check_default_job(job, predictions: pd.DataFrame, labels: pd.DataFrame, run_dates=RUN_DATES) -> None:
    """Run the student's ``job(predictions, labels, run_date)`` on several dates, once on a tampered feed."""
    exercise = "ex-11-4"
    hint = ("month = newest_complete_month(run_date); keep the predictions made by run_date; join_labels(..., "
            "as_of=run_date); the AUC of that month's labelled rows (NaN if there are none).")
    if not callable(job):
        return verdict(exercise, None if not_attempted(job) else False, "define default_auc_job(...)", hint)
    for run in map(pd.Timestamp, run_dates):
        expected = default_job(predictions, labels, run)
        tampered = labels.assign(label=np.where(labels["label_time"] > run, 1 - labels["label"], labels["label"]))
        try:
            answer = job(predictions, labels, run)
            if not_attempted(answer):
                return verdict(exercise, None, "your job returns nothing yet: return the AUC (a float).")
            answer = float(answer)
            peeked = float(job(predictions, tampered, run))
        except Exception as error:  # the student's code: report, never crash the check
            return verdict(exercise, False, f"your job raised {type(error).__name__} on {run.date()}: {error}", hint)
        if not _same(answer, peeked):
            return verdict(exercise, False, f"on {run.date()} your job changed its answer when labels known only "
                                            f"after that day were altered: it reads labels from the future.", hint)
        if not _same(answer, expected):
            newest = newest_complete_month(run)
            maturing = _month_auc(predictions, labels, run, month_label(newest + 1))
            why = (f"on {run.date()} the expected AUC is {expected:.4f} (month {month_label(newest)}), yours is "
                   f"{answer:.4f}.")
            if _same(answer, maturing):
                why += (f" You scored {month_label(newest + 1)}, which is still maturing: its early defaults are "
                        f"known but not yet its payers, so its known labels over-state risk.")
            return verdict(exercise, False, why, hint)
    verdict(exercise, True,
            f"your job matches the reference on {len(run_dates)} run dates and ignores labels from after each one. "
            f"It judges a month only once every loan of it has had {OUTCOME_MONTHS} months on book (or defaulted).")
