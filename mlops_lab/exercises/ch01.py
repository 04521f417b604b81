"""Checks for chapter 01: maturity levels and the manual process."""
from __future__ import annotations

import pandas as pd

from ..checks import check_choice, check_mapping, check_number, not_attempted, verdict
from ..models import decay_table
from ..simulator import CreditStream, Drift

PRACTICE_LEVELS = {
    "retrain in a notebook when someone complains": 0,
    "copy the model file to the serving host by hand": 0,
    "a pipeline retrains on fresh data when a drift alarm fires": 1,
    "a new model is validated against the current one before it serves": 1,
    "a pull request to the pipeline code runs tests and deploys the pipeline": 2,
    "the training pipeline itself is versioned, built and released by CI/CD": 2,
}
WHY_LEVEL = {
    0: "a person starts and carries out every step (Level 0).",
    1: "the training pipeline runs, validates and deploys models by itself (Level 1, continuous training).",
    2: "CI/CD builds, tests and releases the pipeline's code (Level 2).",
}


def first_alarm_month(table: pd.DataFrame, drop: float = 0.05) -> str | None:
    """The first period whose Level-0 accuracy is more than ``drop`` below its January holdout accuracy."""
    baseline = table["level0_accuracy"].iloc[0]
    late = table[table["level0_accuracy"] < baseline - drop]
    return None if late.empty else late["period"].iloc[0]


def check_first_alarm(answer, table: pd.DataFrame) -> None:
    expected = first_alarm_month(table)
    check_choice("ex-01-1", answer, expected, choices=list(table["period"]) + [None],
                 why=f"{expected} is the first month more than 5 points below January; a monitor on accuracy "
                     f"would have fired then, once labels arrived.",
                 hint="compare each month's level0_accuracy with the first row's, minus 0.05.")


def check_levels(answer) -> None:
    check_mapping("ex-01-2", answer, PRACTICE_LEVELS,
                  why={k: WHY_LEVEL[v] for k, v in PRACTICE_LEVELS.items()},
                  hint="Level 1 automates training (CT); Level 2 also automates the pipeline's own delivery.")


def worst_drift_for_ranking(strength: float = 1.5, month: int = 11, rows: int = 4000, seed: int = 2024) -> str:
    """Which kind of drift lowers a stale model's AUC most by ``month`` (measured, not assumed)."""
    drops = {}
    for kind in ("covariate", "label", "concept"):
        stream = CreditStream(seed=seed, rows_per_month=rows, drift=Drift(**{kind: strength}))
        table = decay_table(stream, [0, month])
        drops[kind] = table["level0_auc"].iloc[0] - table["level0_auc"].iloc[-1]
    return max(drops, key=drops.get)


def check_worst_drift(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-01-3", None, "replace the ... with 'covariate', 'label' or 'concept'.")
    expected = worst_drift_for_ranking()
    check_choice("ex-01-3", answer, expected, choices=["covariate", "label", "concept"],
                 why="only concept drift changes which applicants are risky; covariate and label shift move "
                     "who applies or how many default, which hurts accuracy at a fixed threshold far more than "
                     "the ranking (AUC).",
                 hint="run decay_table for each kind and compare level0_auc in month 11 with month 0.")


def check_staleness_cost(answer, table: pd.DataFrame, months=range(6, 12)) -> None:
    rows = table.loc[list(months)]
    expected = float((rows["retrained_accuracy"] - rows["level0_accuracy"]).mean())
    check_number("ex-01-4", answer, expected, tolerance=0.002,
                 why=f"retraining monthly would have been right on {expected:.1%} more applicants on average "
                     f"from {rows['period'].iloc[0]} to {rows['period'].iloc[-1]}.",
                 hint="average retrained_accuracy - level0_accuracy over months 6 to 11 (table.loc[6:11]).")
