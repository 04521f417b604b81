"""The course's baseline credit model and how it is scored, shared by every chapter."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .simulator import CATEGORICAL, FEATURES, NUMERIC, TARGET, CreditStream, month_label


def credit_model(C: float = 1.0) -> Pipeline:
    """Scale the numbers, one-hot the categories, fit a logistic regression: a strong, honest baseline."""
    features = ColumnTransformer([
        ("numeric", StandardScaler(), NUMERIC),
        ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ])
    return Pipeline([("features", features), ("classifier", LogisticRegression(C=C, max_iter=1000))])


def train(batch: pd.DataFrame, C: float = 1.0) -> Pipeline:
    return credit_model(C).fit(batch[FEATURES], batch[TARGET])


def evaluate(model: Pipeline, batch: pd.DataFrame, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy at ``threshold`` (decline when P(default) >= threshold) and AUC (how well it ranks risk)."""
    p = model.predict_proba(batch[FEATURES])[:, 1]
    y = batch[TARGET].to_numpy()
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
