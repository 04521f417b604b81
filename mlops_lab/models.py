"""The course's baseline credit model and how it is scored, shared by every chapter.

:func:`train` and :func:`evaluate` take the date of the decision (``as_of``) and refuse a row whose label the
lender could not know then (:class:`~mlops_lab.simulator.LabelFromTheFuture`): select rows with
:func:`~mlops_lab.simulator.known_as_of` or :meth:`~mlops_lab.simulator.CreditStream.training_window`.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .simulator import (CATEGORICAL, EARLY_LABEL, FEATURES, NUMERIC, OUTCOME_MONTHS, TARGET, CreditStream,
                        check_known, known_as_of, month_label, month_start, newest_complete_month)


def credit_model(C: float = 1.0) -> Pipeline:
    """Scale the numbers, one-hot the categories, fit a logistic regression: a strong, honest baseline."""
    features = ColumnTransformer([
        ("numeric", StandardScaler(), NUMERIC),
        ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ])
    return Pipeline([("features", features), ("classifier", LogisticRegression(C=C, max_iter=1000))])


def train(batch: pd.DataFrame, *, as_of, C: float = 1.0, label: str = TARGET) -> Pipeline:
    """Fit :func:`credit_model` on ``batch``, every row of which must have ``label`` known on ``as_of``."""
    check_known(batch, as_of, label)
    return credit_model(C).fit(batch[FEATURES], batch[label].astype(int))


def evaluate(model: Pipeline, batch: pd.DataFrame, *, as_of, threshold: float = 0.5,
             label: str = TARGET) -> dict[str, float]:
    """Accuracy at ``threshold`` (decline when P(default) >= threshold) and AUC (how well it ranks risk).

    Every row's ``label`` must be known on ``as_of``: a retrospective look uses a late ``as_of`` and says so.
    """
    check_known(batch, as_of, label)
    p = model.predict_proba(batch[FEATURES])[:, 1]
    y = batch[label].to_numpy(dtype=int)
    return {"accuracy": accuracy_score(y, p >= threshold), "auc": roc_auc_score(y, p),
            "default_rate": float(y.mean())}


DECAY_LINES = ("level0", "retrained", "early", "oracle")


def decay_table(stream: CreditStream, months: Iterable[int], rows: int | None = None, *, window: int = 3,
                deployed: int = 0, lines: Iterable[str] = DECAY_LINES) -> pd.DataFrame:
    """How a model nobody retrains decays, against models retrained on what the lender knows, month by month.

    Each model is trained on what is known on a date (the book's clock, chapter 01):

    - ``level0``: trained once, on the first day of month ``deployed`` (month 0: 2024-01-01), on the newest
      ``window`` application months whose every 12-month outcome is known then, and never again.
    - ``retrained``: at the start of each month ``t``, trained again on the newest ``window`` months whose
      every outcome is known on ``month_start(t)``: up to month ``t - 13`` (12 months on book, plus the
      month it takes the last loans of a month to mature).
    - ``early``: the same, learning the early-performance label (ever 30+ days past due in the first 3
      months on book, known 4 months after the application): up to month ``t - 5``. It predicts another
      event, so its scores are on another scale: only its ranking of defaults (AUC) is reported.
    - ``oracle``: IMPOSSIBLE, for comparison only. At month ``t`` it trains on months ``t - window .. t - 1``
      with their 12-month outcomes, which no lender knows until a year later; it is given a late ``as_of``.
      The gap between it and ``retrained`` is what the label delay costs.

    Each month's models are scored on that month's approved loans (a declined applicant has no outcome),
    looking back from ``attrs['evaluated_as_of']``, the first of a month by which every outcome of the last
    month is known: an analysis after the fact, not a decision. ``ceiling_auc`` is the AUC of the simulator's true
    P(default | x) on the same loans, the best any model could rank them. ``*_through`` names the newest
    application month a model learned from.
    """
    months, lines = [int(m) for m in months], tuple(lines)
    unknown = set(lines) - set(DECAY_LINES)
    if unknown or "level0" not in lines:
        raise ValueError(f"lines must include 'level0' and come from {DECAY_LINES}, got {lines}")
    if not months or min(months) < deployed:
        raise ValueError(f"months must be a non-empty list of months from deployed={deployed} on, got {months}")
    batches: dict[int, pd.DataFrame] = {}

    def batch(month: int) -> pd.DataFrame:               # each month drawn once
        if month not in batches:
            batches[month] = stream.month(month, rows)
        return batches[month]

    def labelled(window_months, as_of, label=TARGET) -> pd.DataFrame:
        return known_as_of(pd.concat([batch(m) for m in window_months], ignore_index=True), as_of, label)

    def newest_window(as_of, label=TARGET) -> range:
        newest = newest_complete_month(as_of, label)
        return range(newest - window + 1, newest + 1)

    evaluated_as_of = month_start(max(months) + OUTCOME_MONTHS + 1)
    deployed_as_of = month_start(deployed)
    level0_window = newest_window(deployed_as_of)
    level0 = train(labelled(level0_window, deployed_as_of), as_of=deployed_as_of)
    rows_out = []
    for month in months:
        loans = known_as_of(batch(month), evaluated_as_of)   # approved loans, every outcome in by then
        truth = loans[TARGET].to_numpy(dtype=int)
        scores = evaluate(level0, loans, as_of=evaluated_as_of)
        row = {"month": month, "period": month_label(month), "loans": len(loans),
               "default_rate": scores["default_rate"],
               "ceiling_auc": roc_auc_score(truth, stream.default_probability(loans)),
               "level0_accuracy": scores["accuracy"], "level0_auc": scores["auc"]}
        as_of = month_start(month)
        if "retrained" in lines:
            known = newest_window(as_of)
            scores = evaluate(train(labelled(known, as_of), as_of=as_of), loans, as_of=evaluated_as_of)
            row.update(retrained_through=month_label(known[-1]), retrained_accuracy=scores["accuracy"],
                       retrained_auc=scores["auc"])
        if "early" in lines:
            known = newest_window(as_of, EARLY_LABEL)
            model = train(labelled(known, as_of, EARLY_LABEL), as_of=as_of, label=EARLY_LABEL)
            row.update(early_through=month_label(known[-1]),
                       early_auc=evaluate(model, loans, as_of=evaluated_as_of)["auc"])
        if "oracle" in lines:                          # impossible on month_start(month): see the docstring
            recent = range(month - window, month)
            scores = evaluate(train(labelled(recent, evaluated_as_of), as_of=evaluated_as_of), loans,
                              as_of=evaluated_as_of)
            row.update(oracle_accuracy=scores["accuracy"], oracle_auc=scores["auc"])
        rows_out.append(row)
    table = pd.DataFrame(rows_out).set_index("month")
    table.attrs.update(evaluated_as_of=evaluated_as_of, deployed_as_of=deployed_as_of, window=window,
                       level0_months=[month_label(m) for m in level0_window])
    return table


def decision_changes(a: Pipeline, b: Pipeline, batch: pd.DataFrame, threshold: float = 0.5) -> float:
    """The share of applicants that two models would decide differently (approve vs decline)."""
    da = a.predict_proba(batch[FEATURES])[:, 1] >= threshold
    db = b.predict_proba(batch[FEATURES])[:, 1] >= threshold
    return float(np.mean(da != db))
