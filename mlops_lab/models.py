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

from .simulator import CATEGORICAL, FEATURES, NUMERIC, TARGET, CreditStream, check_known, month_label


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


def decay_table(stream: CreditStream, months: Iterable[int], rows: int | None = None) -> pd.DataFrame:
    """Score a model trained once on month 0 against one retrained each month on the month before.

    The first is Level 0 (deployed by hand, never updated); the second is what continuous training
    (Level 1) would serve. One row per month: both models' accuracy and AUC on that month's batch
    (for month 0, on an independent January holdout).
    """
    stale = train(stream.month(0, rows))
    rows_out = []
    for month in months:
        batch = stream.month(month, rows, replicate=1 if month == 0 else 0)
        fresh = train(stream.month(month - 1, rows)) if month > 0 else stale
        stale_scores, fresh_scores = evaluate(stale, batch), evaluate(fresh, batch)
        rows_out.append({"month": month, "period": month_label(month),
                         "default_rate": stale_scores["default_rate"],
                         "level0_accuracy": stale_scores["accuracy"], "level0_auc": stale_scores["auc"],
                         "retrained_accuracy": fresh_scores["accuracy"], "retrained_auc": fresh_scores["auc"]})
    return pd.DataFrame(rows_out).set_index("month")


def decision_changes(a: Pipeline, b: Pipeline, batch: pd.DataFrame, threshold: float = 0.5) -> float:
    """The share of applicants that two models would decide differently (approve vs decline)."""
    da = a.predict_proba(batch[FEATURES])[:, 1] >= threshold
    db = b.predict_proba(batch[FEATURES])[:, 1] >= threshold
    return float(np.mean(da != db))
