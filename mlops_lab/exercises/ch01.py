"""Checks for chapter 01: maturity levels, the manual process, and the book's clock."""
from __future__ import annotations

from typing import Callable

import pandas as pd

from ..checks import check_choice, check_mapping, check_number, not_attempted, verdict
from ..models import decay_table
from ..simulator import (APPROVED, EARLY_LABEL, EARLY_MONTHS, OUTCOME_MONTHS, REPORTING_LAG_MONTHS, TARGET,
                         CreditStream, Drift, label_known, month_label, month_start, newest_complete_month)

# How far back the newest complete month lies on the first of a month, for each label (13 and 5).
MONTHS_BACK = {TARGET: OUTCOME_MONTHS + 1, EARLY_LABEL: EARLY_MONTHS + REPORTING_LAG_MONTHS + 1}

PRACTICE_LEVELS = {
    "retrain in a notebook when someone complains": 0,
    "copy the model file to the serving host by hand": 0,
    "a pipeline retrains on fresh data when a drift alarm fires": 1,
    "the pipeline itself compares each new model with the one serving, and stops a worse one": 1,
    "a pull request to the pipeline code runs tests and deploys the pipeline": 2,
    "the training pipeline itself is versioned, built and released by CI/CD": 2,
}
WHY_LEVEL = {
    0: "a person starts and carries out every step (Level 0).",
    1: "the training pipeline runs, validates and deploys models by itself (Level 1, continuous training).",
    2: "CI/CD builds, tests and releases the pipeline's code (Level 2).",
}


def first_alarm_month(table: pd.DataFrame, drop: float = 0.05) -> str | None:
    """The first period whose Level-0 accuracy is more than ``drop`` below the first row's (January's)."""
    baseline = table["level0_accuracy"].iloc[0]
    late = table[table["level0_accuracy"] < baseline - drop]
    return None if late.empty else late["period"].iloc[0]


def check_first_alarm(answer, table: pd.DataFrame) -> None:
    expected = first_alarm_month(table)
    if expected is None:
        return verdict("ex-01-1", None if not_attempted(answer) else False,
                       "in this table no month is more than 5 points below the first: the alarm stays silent.",
                       hint="this happens under concept drift alone; use the chapter's downturn table.")
    month = int(table.index[table["period"] == expected][0])
    check_choice("ex-01-1", answer, expected, choices=list(table["period"]),
                 why=f"{expected} is the first month more than 5 points below January. But the monitor only "
                     f"learns it once that month's outcomes are in: all of them only by "
                     f"{month_start(month + MONTHS_BACK[TARGET]).date()}, more than a year later.",
                 hint="compare each month's level0_accuracy with the first row's, minus 0.05.")


def check_levels(answer) -> None:
    check_mapping("ex-01-2", answer, PRACTICE_LEVELS,
                  why={k: WHY_LEVEL[v] for k, v in PRACTICE_LEVELS.items()},
                  hint="Level 1 automates training (CT); Level 2 also automates the pipeline's own delivery.")


def ranking_loss(kind: str, strength: float = 1.5, month: int = 11, rows: int = 4000, seed: int = 2024) -> float:
    """How much further the Level-0 model's AUC falls below the ceiling by ``month`` than in month 0.

    The ceiling is the AUC of the true P(default | x) on the same loans (``decay_table``'s ``ceiling_auc``):
    the best ranking any model could reach there. Who applies moves the ceiling itself, so the raw AUC is
    not the measure of the model; its distance from the ceiling is.
    """
    stream = CreditStream(seed=seed, rows_per_month=rows, drift=Drift(**{kind: strength}))
    table = decay_table(stream, [0, month], lines=("level0",))
    gap = table["ceiling_auc"] - table["level0_auc"]
    return float(gap.iloc[-1] - gap.iloc[0])


def worst_drift_for_ranking(strength: float = 1.5, month: int = 11, rows: int = 4000, seed: int = 2024) -> str:
    """Which kind of drift costs a stale model most ranking by ``month`` (measured, not assumed)."""
    losses = {kind: ranking_loss(kind, strength, month, rows, seed) for kind in ("covariate", "label", "concept")}
    return max(losses, key=losses.get)


def check_worst_drift(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-01-3", None, "replace the ... with 'covariate', 'label' or 'concept'.")
    expected = worst_drift_for_ranking()
    check_choice("ex-01-3", answer, expected, choices=["covariate", "label", "concept"],
                 why="only concept drift changes which applicants are risky, so only it pushes the stale "
                     "model's ranking away from the best possible one. Covariate shift changes who applies "
                     "(and so the ceiling itself: compare ceiling_auc across months), label shift how many "
                     "default; a model of the unchanged rule still ranks them as well as anyone could.",
                 hint="for each kind, compute ceiling_auc - level0_auc in months 0 and 11, and compare how much "
                      "it grew.")


def check_early_label_gain(answer, table: pd.DataFrame, months=range(6, 12)) -> None:
    rows = table.loc[list(months)]
    expected = float((rows["early_auc"] - rows["retrained_auc"]).mean())
    check_number("ex-01-4", answer, expected, tolerance=0.002,
                 why=f"learning the early label, complete {MONTHS_BACK[EARLY_LABEL]} months back instead of "
                     f"{MONTHS_BACK[TARGET]}, ranked defaults better by "
                     f"{expected:.3f} AUC on average from {rows['period'].iloc[0]} to {rows['period'].iloc[-1]}.",
                 hint="average early_auc - retrained_auc over months 6 to 11 (table.loc[6:11]).")


# -- exercise 5: build the function that picks a training window on the clock -------------------------
PROBE_DATES = ("2024-01-01", "2024-01-30", "2024-01-31", "2024-03-01", "2024-03-31", "2024-07-15",
               "2024-12-31", "2025-03-01")


def expected_training_months(as_of, months: int = 3, label: str = TARGET) -> list[int]:
    """The newest ``months`` application months whose every ``label`` is known on ``as_of``."""
    newest = newest_complete_month(as_of, label)
    return list(range(newest - months + 1, newest + 1))


def _unknown_share(month: int, as_of, label: str) -> tuple[int, int]:
    """(approved loans of ``month`` whose label is unknown on ``as_of``, approved loans): a sample stream."""
    batch = CreditStream(seed=0, rows_per_month=2000).month(month)
    approved = batch[APPROVED].to_numpy(dtype=bool)
    return int((approved & ~label_known(batch, as_of, label)).sum()), int(approved.sum())


def check_training_months(training_months: Callable) -> None:
    """Run the student's ``training_months(as_of, months=3, label="default")`` on dates that catch the edges."""
    exercise = "ex-01-5"
    if not_attempted(training_months):
        return verdict(exercise, None, "define training_months(as_of, months=3, label='default') and pass it.")
    if not callable(training_months):
        return verdict(exercise, False, f"expected a function, got {type(training_months).__name__}.",
                       "pass the function itself: check_training_months(training_months).")
    try:
        first = training_months(PROBE_DATES[0], months=3, label=TARGET)
    except Exception:  # reported below, with the call that failed
        first = []
    if not_attempted(first):
        return verdict(exercise, None, "your training_months returns nothing yet: make it return a list of months.")
    hint = (f"month m is complete when the loans of its last day are known: month_end(m) plus {OUTCOME_MONTHS} "
            f"months (default) or {EARLY_MONTHS + REPORTING_LAG_MONTHS} months (early_delinquency) must be on or "
            f"before as_of.")
    for label in (TARGET, EARLY_LABEL):
        for as_of in PROBE_DATES:
            for months in (3, 1):
                expected = expected_training_months(as_of, months, label)
                try:
                    got = sorted(int(m) for m in training_months(as_of, months=months, label=label))
                except Exception as error:  # the student's code: report, never crash the notebook
                    return verdict(exercise, False, f"training_months({as_of!r}, months={months}, label={label!r}) "
                                   f"raised {type(error).__name__}: {error}", hint)
                if got == expected:
                    continue
                call = f"training_months({as_of!r}, months={months}, label={label!r})"
                names = ", ".join(month_label(m) for m in got) or "nothing"
                if got and max(got) > expected[-1]:
                    unknown, approved = _unknown_share(max(got), as_of, label)
                    known = ("the known ones are its early defaults" if label == TARGET
                             else "the known ones are the loans of its first days")
                    problem = (f"{call} returned {names}, but {month_label(max(got))} is not complete on {as_of}: "
                               f"in a sample, {unknown} of its {approved} loans have no {label!r} known yet "
                               f"(check_known would refuse them; {known}).")
                elif got and max(got) < expected[-1]:
                    problem = (f"{call} returned {names}, but {month_label(expected[-1])} is already complete on "
                               f"{as_of}: under drift the newest labels are the most valuable; do not wait longer.")
                else:
                    problem = (f"{call} returned {names}; expected {months} consecutive months ending "
                               f"{month_label(expected[-1])}.")
                return verdict(exercise, False, problem, hint)
    newest = {label: month_label(expected_training_months("2024-01-01", label=label)[-1]) for label in MONTHS_BACK}
    verdict(exercise, True, f"on all {len(PROBE_DATES)} dates and both labels your window is the newest complete "
                            f"one: on 2024-01-01 that is up to {newest[TARGET]} for default ({MONTHS_BACK[TARGET]} "
                            f"months back) and up to {newest[EARLY_LABEL]} for the early label "
                            f"({MONTHS_BACK[EARLY_LABEL]} months back).")
