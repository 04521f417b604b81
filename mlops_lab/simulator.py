"""The running example: a lender's stream of credit applications, one batch a month.

Generative story (month 0 is January 2024; every batch is an independent draw):

1. **Applicant.** Age, employment years, income (log-normal, rising with age), home ownership (renting is
   likelier when young) and a loan purpose.
2. **Loan.** An amount that scales with income, a 36- or 60-month term, and the resulting debt-to-income
   ratio (existing debt plus the new instalment). A credit score that rises with income, and a count of
   delinquencies in the last two years that is likelier with a low score. A count of open accounts.
3. **Outcome.** ``default`` (1 = the loan defaulted within 12 months) is a Bernoulli draw whose log-odds are
   a linear function of the standardised applicant and loan features (about 10 % default in month 0).

Three knobs, each a strength that ramps in linearly from ``start_month`` over ``ramp_months`` (see
:class:`Drift`), move the world away from month 0:

- ``covariate`` shift changes who applies (P(x)): a downturn lowers incomes and credit scores, raises
  loan amounts, debt-to-income, 60-month terms and debt-consolidation loans. The rule that maps an
  applicant to risk is unchanged.
- ``label`` shift changes how common defaults are (P(y)) while keeping what defaulters and payers look like
  (P(x | y)): the odds of default are multiplied by ``exp(label level)``, by rejection sampling.
- ``concept`` drift changes the rule itself (P(y | x)): the credit score predicts less, leverage
  (debt-to-income), short employment and small-business or credit-card loans predict more.

Everything is vectorised and deterministic: month ``t`` of a stream depends only on ``(seed, t, rows)``, so
months can be drawn in any order, and one million rows take about a second.
``month(t, replicate=1)`` draws an independent second batch from the same month, for holdouts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

START = pd.Period("2024-01", freq="M")
NUMERIC = ["age", "income", "employment_years", "loan_amount", "loan_term", "debt_to_income",
           "credit_score", "open_accounts", "delinquencies_2y"]
CATEGORICAL = ["home_ownership", "purpose"]
FEATURES = NUMERIC + CATEGORICAL
TARGET = "default"
HOME = ["rent", "mortgage", "own"]
PURPOSES = ["debt_consolidation", "credit_card", "home_improvement", "car", "small_business", "education"]
_PURPOSE_BASE = np.array([0.35, 0.20, 0.15, 0.15, 0.08, 0.07])
_PURPOSE_SHIFT = np.array([0.6, 0.3, -0.3, -0.3, 0.2, 0.0])   # log-weight per unit of covariate shift
_PURPOSE_RISK = np.array([0.15, 0.0, -0.1, -0.1, 0.6, 0.3])
_PURPOSE_CONCEPT = np.array([0.2, 0.6, 0.0, 0.0, 0.8, 0.0])   # extra log-odds per unit of concept drift
_HOME_RISK = np.array([0.2, 0.0, -0.2])


def month_label(month: int) -> str:
    """``month_label(0) == '2024-01'``: the calendar month of a batch index."""
    return str(START + int(month))


@dataclass(frozen=True)
class Drift:
    """How far the world has moved at each month: strength x a linear ramp.

    The level of a knob at month ``t`` is ``strength * clip((t - start_month + 1) / ramp_months, 0, 1)``:
    0 before ``start_month``, full strength ``ramp_months`` months later (``ramp_months=0`` is a step).
    A strength of 1 is a realistic recession; 2 is severe. Negative strengths move the other way.
    """

    covariate: float = 0.0
    label: float = 0.0
    concept: float = 0.0
    start_month: int = 0
    ramp_months: int = 12

    def __post_init__(self):
        for name in ("covariate", "label", "concept"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"Drift.{name} must be a finite number, got {value!r}")
        for name in ("start_month", "ramp_months"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"Drift.{name} must be a whole number >= 0, got {value!r}")

    def ramp(self, month: int) -> float:
        """The fraction (0..1) of full strength reached at ``month``."""
        if month < self.start_month:
            return 0.0
        if self.ramp_months == 0:
            return 1.0
        return float(np.clip((month - self.start_month + 1) / self.ramp_months, 0.0, 1.0))

    def levels(self, month: int) -> dict[str, float]:
        r = self.ramp(month)
        return {"covariate": self.covariate * r, "label": self.label * r, "concept": self.concept * r}


@dataclass(frozen=True)
class CreditStream:
    """Monthly batches of credit applications with a known, tunable amount of drift.

    >>> stream = CreditStream(seed=7, drift=Drift(covariate=1.0, concept=1.0))
    >>> batch = stream.month(3)                  # a DataFrame: FEATURES + 'default' + 'month' + 'application_id'
    >>> history = stream.months(range(0, 6))     # several months, concatenated
    """

    seed: int = 0
    rows_per_month: int = 5000
    drift: Drift = field(default_factory=Drift)

    def __post_init__(self):
        if not isinstance(self.rows_per_month, (int, np.integer)) or self.rows_per_month < 1:
            raise ValueError(f"rows_per_month must be a whole number >= 1, got {self.rows_per_month!r}")
        if not isinstance(self.drift, Drift):
            raise TypeError(f"drift must be a Drift(...), got {type(self.drift).__name__}")

    def month(self, month: int, rows: int | None = None, replicate: int = 0) -> pd.DataFrame:
        """One month's batch: ``rows`` applications (default ``rows_per_month``) with their outcome.

        ``replicate=1, 2, ...`` draws another, independent batch from the same month (a holdout set).
        """
        if not isinstance(month, (int, np.integer)) or month < 0:
            raise ValueError(f"month must be a whole number >= 0 (0 is {month_label(0)}), got {month!r}")
        n = self.rows_per_month if rows is None else int(rows)
        if n < 1:
            raise ValueError(f"rows must be >= 1, got {rows!r}")
        rng = np.random.default_rng([self.seed, int(month), n, int(replicate)])
        level = self.drift.levels(month)
        if level["label"] == 0:
            batch = self._draw(rng, n, month, level)
        else:
            batch = self._draw_label_shifted(rng, n, month, level)
        batch.insert(0, "application_id", np.int64(month) * 10_000_000 + np.arange(n, dtype=np.int64))
        batch.insert(1, "month", np.int16(month))
        return batch

    def months(self, months: Iterable[int]) -> pd.DataFrame:
        """Several months' batches, concatenated in the order given."""
        return pd.concat([self.month(m) for m in months], ignore_index=True)

    def default_probability(self, batch: pd.DataFrame) -> np.ndarray:
        """The true P(default | x) for each row under its month's concept (before label shift).

        The ceiling for any model: its AUC on a batch is the best AUC a model could reach there.
        """
        concept = np.array([self.drift.levels(int(m))["concept"] for m in batch["month"].to_numpy()])
        return _sigmoid(_log_odds(batch, concept))

    # -- drawing ---------------------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator, n: int, month: int, level: dict) -> pd.DataFrame:
        x = _applicants(rng, n, level["covariate"])
        x[TARGET] = (rng.random(n) < _sigmoid(_log_odds(x, level["concept"]))).astype(np.int8)
        return x

    def _draw_label_shifted(self, rng, n, month, level) -> pd.DataFrame:
        # Rejection sampling keeps P(x | y) and multiplies the odds of default by w = exp(label level):
        # keep defaulters with probability min(1, w) and payers with probability min(1, 1/w).
        w = float(np.exp(level["label"]))
        keep = np.array([min(1.0, 1 / w), min(1.0, w)])  # index by the outcome (0 payer, 1 defaulter)
        kept, have = [], 0
        while have < n:
            # Every row is kept with probability >= 1/max(w, 1/w), so one pool this size almost always suffices.
            pool = self._draw(rng, int((n - have) * max(w, 1 / w) * 1.1) + 1000, month, level)
            pool = pool[rng.random(len(pool)) < keep[pool[TARGET].to_numpy()]]
            kept.append(pool)
            have += len(pool)
        return pd.concat(kept, ignore_index=True).iloc[:n].reset_index(drop=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _applicants(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    """Draw applicants and loans; ``shift`` is the covariate-shift level (0 = month-0 population)."""
    age = np.clip(rng.normal(41 - 3 * shift, 11, n), 21, 75).round()
    employment = np.minimum(age - 18, rng.gamma(2.0, 3.0, n) * np.exp(-0.3 * shift)).round(1)
    income = np.exp(np.log(52_000) + 0.012 * (age - 41) - 0.2 * shift + rng.normal(0, 0.45, n)).round(-2)
    p_rent = np.clip(0.75 - 0.013 * (age - 21) + 0.05 * shift, 0.1, 0.85)
    p_own = np.clip(0.05 + 0.005 * (age - 21), 0.05, 0.4)
    u = rng.random(n)
    home = np.where(u < p_rent, 0, np.where(u < p_rent + p_own, 2, 1))
    purpose_p = _PURPOSE_BASE * np.exp(shift * _PURPOSE_SHIFT)
    purpose = rng.choice(len(PURPOSES), size=n, p=purpose_p / purpose_p.sum())
    loan = np.exp(np.log(12_000) + 0.35 * np.log(income / 52_000) + 0.2 * shift + rng.normal(0, 0.5, n))
    loan = np.clip(loan, 1_000, 60_000).round(-2)
    term = np.where(rng.random(n) < np.clip(0.25 + 0.15 * shift, 0.05, 0.9), 60, 36)
    instalment = loan * (1 + 0.08 * term / 12) / term * 12          # yearly repayment incl. simple interest
    dti = np.clip(rng.normal(0.20 + 0.04 * shift, 0.08, n) + instalment / income, 0.0, 0.95).round(3)
    score = np.clip(690 + 30 * np.log(income / 52_000) - 25 * shift + rng.normal(0, 55, n), 300, 850).round()
    delinquencies = rng.poisson(np.exp(-1.3 - (score - 690) / 70))
    accounts = rng.poisson(np.maximum(1, 3 + 0.1 * (age - 21)))
    return pd.DataFrame({
        "age": age.astype(np.int16), "income": income, "employment_years": employment,
        "loan_amount": loan, "loan_term": term.astype(np.int16), "debt_to_income": dti,
        "credit_score": score.astype(np.int16), "open_accounts": accounts.astype(np.int16),
        "delinquencies_2y": delinquencies.astype(np.int16),
        "home_ownership": pd.Categorical.from_codes(home, HOME),
        "purpose": pd.Categorical.from_codes(purpose, PURPOSES),
    })


def _log_odds(x: pd.DataFrame, concept) -> np.ndarray:
    """Log-odds of default; ``concept`` (a scalar or one value per row) bends the rule."""
    c = np.asarray(concept, dtype=float)
    home = pd.Categorical(x["home_ownership"], categories=HOME).codes
    purpose = pd.Categorical(x["purpose"], categories=PURPOSES).codes
    return (
        -2.45
        - 0.85 * (1 - 0.6 * c) * (x["credit_score"].to_numpy() - 690) / 60
        + (0.45 + 0.5 * c) * (x["debt_to_income"].to_numpy() - 0.35) / 0.1
        - 0.3 * np.log(x["income"].to_numpy() / 52_000)
        + 0.35 * x["delinquencies_2y"].to_numpy()
        + 0.35 * (x["loan_term"].to_numpy() == 60)
        - (0.3 + 0.5 * c) * np.minimum(x["employment_years"].to_numpy(), 10) / 10
        + _HOME_RISK[home]
        + _PURPOSE_RISK[purpose] + c * _PURPOSE_CONCEPT[purpose]
    )
