"""Checks for chapter 12: drift and automated retraining."""
from __future__ import annotations

import math

import pandas as pd

from ..checks import check_number, not_attempted, verdict
from ..retraining import ALARM, INSUFFICIENT, OK, validate_batch
from ..simulator import EARLY_LABEL


def smallest_good_window(table: pd.DataFrame, rule: str = "psi_0.1", strength: float = 0.5,
                         max_false_alarms: float = 0.05, max_delay_days: float = 14) -> int | None:
    """The smallest window (days) whose false-alarm rate is below the limit and whose expected detection
    delay for a shift of ``strength`` is within ``max_delay_days``; None if no window qualifies."""
    rows = table[(table["rule"] == rule)].set_index("days").sort_index()
    ok = (rows["false_alarm_rate"] < max_false_alarms) & (rows[f"delay_days_{strength:g}"] <= max_delay_days)
    return int(ok.idxmax()) if ok.any() else None


def check_window(answer, table: pd.DataFrame) -> None:
    expected = smallest_good_window(table)
    if not_attempted(answer):
        return verdict("ex-12-1", None, "replace the ... with a number of days (or None if no window works).")
    rows = table[table["rule"] == "psi_0.1"].set_index("days")
    if expected is None:
        return verdict("ex-12-1", answer is None, "no window meets both limits with this rule." if answer is None
                       else f"no window meets both limits; {answer!r} does not.", "look at both columns.")
    if answer == expected:
        return verdict("ex-12-1", True,
                       f"{expected} days: a shorter window raises false alarms on as many as "
                       f"{rows['false_alarm_rate'].loc[:expected - 1].max():.0%} of stable windows with a "
                       f"fixed PSI cutoff of 0.1, and this one still catches the shift in about "
                       f"{rows.loc[expected, 'delay_days_0.5']:.0f} days.")
    if answer in rows.index and answer > expected:
        return verdict("ex-12-1", False, f"{answer} days meets both limits, but a smaller window does too.",
                       "the question asks for the smallest window that meets both.")
    return verdict("ex-12-1", False, f"{answer!r} days does not meet both limits.",
                   "filter the rule 'psi_0.1' on false_alarm_rate < 0.05 and delay_days_0.5 <= 14.")


def check_uncorrected_rate(answer, features: int = 11, alpha: float = 0.05) -> None:
    expected = 1 - (1 - alpha) ** features
    check_number("ex-12-2", answer, expected, tolerance=0.005,
                 why=f"each of {features} independent tests stays quiet with probability {1 - alpha}, all of them "
                     f"with {1 - alpha}^{features} = {(1 - alpha) ** features:.3f}, so at least one false alarm "
                     f"happens with probability {expected:.3f}. Holm or Bonferroni bring it back to at most "
                     f"{alpha}.",
                 hint="P(at least one) = 1 - P(none); P(none) is a product of 11 equal probabilities.")


def check_flagged_columns(answer, batch: pd.DataFrame) -> None:
    if not_attempted(answer):
        return verdict("ex-12-3", None, "replace the ... with a set of column names.")
    problems = validate_batch(batch, "exercise").problems
    expected = set(problems["column"])
    try:
        given = set(answer)
    except TypeError:
        return verdict("ex-12-3", False, f"expected a set of column names, got {type(answer).__name__}.")
    if given == expected:
        why = "; ".join(f"{row.column}: {row.check} ({row.rows} rows)" for row in problems.itertuples())
        return verdict("ex-12-3", True, f"the contract flags exactly {sorted(expected)} ({why}). The labels "
                                        f"that are not known yet (<NA>) are not a problem: on the book's clock "
                                        f"that is what a snapshot holds. Quarantining the batch keeps the rest "
                                        f"out of training.")
    missing, extra = sorted(expected - given), sorted(given - expected)
    return verdict("ex-12-3", False, "".join([f"missing: {missing}. " if missing else "",
                                              f"not flagged: {extra}." if extra else ""]).strip(),
                   "run validate_batch(batch).problems and look at its 'column' column; an unknown label "
                   "(<NA>) is allowed, a known one on a declined application is not.")


def either_alarm(week: dict) -> bool:
    """The reference trigger of exercise 4: retrain when either alarm is in ALARM."""
    return ALARM in (week["input_alarm"], week["performance_alarm"])


def check_trigger(answer, years: dict, year: pd.DataFrame, worlds=("downturn", "concept drift")) -> None:
    """Exercise 4: a trigger that retrains when either alarm fires, run through the simulated years."""
    if not_attempted(answer):
        return verdict("ex-12-4", None, "replace the ... with a function of one week's checks that returns "
                                        "True to retrain.")
    if not callable(answer):
        return verdict("ex-12-4", False, f"expected a function, got {type(answer).__name__}.",
                       "def either(week): return ... ; then trigger = either")
    states = (OK, ALARM, INSUFFICIENT)
    wrong = []
    for inputs in states:
        for performance in states:
            week = {"week": 10, "date": pd.Timestamp("2024-03-11"), "input_alarm": inputs,
                    "performance_alarm": performance, "drifted_features": 0, "monitored_auc": 0.7,
                    "auc_drop_z": 0.0}
            try:
                said = bool(answer(dict(week)))
            except Exception as error:  # the student's function failed: say how, never crash the notebook
                return verdict("ex-12-4", False, f"your trigger raised {type(error).__name__}: {error}.",
                               "read week['input_alarm'] and week['performance_alarm'].")
            if said != either_alarm(week):
                wrong.append(f"input {inputs} / performance {performance}: you said {said}")
    if wrong:
        return verdict("ex-12-4", False, f"{len(wrong)} of 9 combinations of the two alarms disagree, e.g. "
                                         f"{wrong[0]}.", "retrain exactly when at least one alarm is 'ALARM'.")
    lines = []
    for world in worlds:
        run = years[world].run(answer, EARLY_LABEL)
        alone = year[(year["world"] == world) & (year["label"] == EARLY_LABEL)].groupby("policy")
        auc, retrains = alone["auc"].mean(), alone["retrain_started"].sum()
        lines.append(f"{world}: AUC {run['auc'].mean():.3f} with {int(run['retrain_started'].sum())} retrains "
                     f"(input alarm {auc['drift']:.3f} / {int(retrains['drift'])}, performance alarm "
                     f"{auc['performance']:.3f} / {int(retrains['performance'])})")
    return verdict("ex-12-4", True, "it retrains when either alarm fires. Over the simulated year: "
                   + "; ".join(lines) + ". It acts on the input alarm when the applicants move and on the "
                   "performance alarm when only the rule does, so it is never blind to one kind of drift.")


def expected_delay(days: float, detection_rate: float) -> float:
    """Mean days until the first alarm when each window of ``days`` catches the shift with this rate."""
    return days / detection_rate if detection_rate > 0 else math.inf
