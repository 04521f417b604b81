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


# ---- ex-11-5: an alerting rule, checked by promtool ------------------------------------------------------------
LATENCY_ALERT = "RouterLatencyHigh"
SLOW_S, THRESHOLD_S, PER_MINUTE, SLOW_SHARE = 0.5, 0.25, 1000, 0.2
INCIDENT = (21, 26)                  # minutes whose samples carry slow requests (the counters grow from 20 to 25)
# When the rule must be quiet, and when firing: quiet just before; quiet one minute into the incident (for: 2m
# still pending; a rule without it fires); firing three minutes in; quiet again once the minute's window
# holds no slow request.
LATENCY_CHECKS = {19: False, 22: False, 24: True, 29: False}


def latency_series(minutes: int = 40) -> dict[str, list[float]]:
    """Cumulative router_request_duration_seconds buckets, one sample a minute: PER_MINUTE requests a minute,
    all within 10 ms, except SLOW_SHARE of them taking SLOW_S during the incident."""
    bounds = ("0.01", "0.2", "0.5", "+Inf")
    fast = slow = 0.0
    series = {f'router_request_duration_seconds_bucket{{le="{b}"}}': [] for b in bounds}
    for minute in range(minutes):
        if minute:
            share = SLOW_SHARE if INCIDENT[0] <= minute < INCIDENT[1] else 0.0
            fast, slow = fast + PER_MINUTE * (1 - share), slow + PER_MINUTE * share
        for bound, count in zip(bounds, (fast, fast, fast + slow, fast + slow)):
            series[f'router_request_duration_seconds_bucket{{le="{bound}"}}'].append(count)
    return series


def _short(error, folder: str) -> str:
    """promtool's message without the temporary folder's path."""
    return str(error).replace(f"{folder}/", "")


def check_latency_rule(rule) -> None:
    """Render the student's rule, run ``promtool check rules`` on it, then ``promtool test rules`` on a
    synthetic latency incident; say what promtool said, or when the alert fired that it should not have."""
    import tempfile
    from pathlib import Path

    from ..alert_rules import RuleError, promtool_check, promtool_test, promtool_values, rule_file, rule_test

    exercise = "ex-11-5"
    if not_attempted(rule) or isinstance(rule, dict) and any(not_attempted(v) for v in rule.values()):
        return verdict(exercise, None, "fill in every ... of the rule and run the cell again.")
    if not isinstance(rule, dict) or not {"alert", "expr"} <= set(rule):
        return verdict(exercise, False, "a Prometheus alerting rule is a dict with at least 'alert' and 'expr'.")
    if rule["alert"] != LATENCY_ALERT or (rule.get("labels") or {}).get("severity") != "page":
        return verdict(exercise, False, f"name the alert {LATENCY_ALERT!r} and give it the label severity: page.")
    tested = {key: value for key, value in rule.items() if key != "annotations"}   # the timing is what is checked
    with tempfile.TemporaryDirectory() as folder:
        try:
            rules = rule_file({"latency": [tested]}, Path(folder) / "rules.yml")
            promtool_check(rules)
        except (RuleError, TypeError, ValueError) as error:
            return verdict(exercise, False, f"promtool refused the rule:\n{_short(error, folder)}",
                           hint="the expression must be valid PromQL, and 'for' a duration such as '2m'.")
        expected = {"exp_labels": tested.get("labels") or {}}
        checks = [{"eval_time": f"{minute}m", "alertname": LATENCY_ALERT, "exp_alerts": [expected] if on else []}
                  for minute, on in LATENCY_CHECKS.items()]
        test = rule_test([rules], {name: promtool_values(values) for name, values in latency_series().items()},
                         checks, "1m", Path(folder) / "test.yml")
        try:
            promtool_test(test)
        except RuleError as error:
            when = "; ".join(f"minute {m}: {'firing' if on else 'quiet'}" for m, on in LATENCY_CHECKS.items())
            return verdict(exercise, False, f"the rule is valid, but it does not fire when it should ({when}). "
                                            f"promtool said:\n{_short(error, folder)}",
                           hint="p99 over the last minute is histogram_quantile(0.99, sum by (le) "
                                "(rate(router_request_duration_seconds_bucket[1m]))); page above 0.25 s, and only "
                                "after it has held for 2 minutes ('for').")
    verdict(exercise, True, "promtool accepts the rule, and on the synthetic incident it stays quiet before, is "
                            "pending for its first two minutes, pages after them, and resolves once the last "
                            "minute holds no slow request.")
