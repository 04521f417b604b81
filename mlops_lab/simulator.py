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

**The book's clock.** A batch is the world's full record; what a lender knows of it depends on the date.

4. **Decision.** Each applicant is decided on the day they apply (an online lender) by the lender's incumbent
   policy (:data:`POLICY`: a credit-score floor and a debt-to-income cap). Declined applicants never get a
   loan, so the lender never observes their outcome: ``default`` and ``early_delinquency`` are missing
   (``<NA>``) for them. The performance every applicant would have had is kept, for teaching only, in the
   ``*_unseen_by_lender`` columns: no package function that trains, evaluates or gates reads them, and
   :func:`lend` applies another decision (a model's, in chapter 10's A/B test) to the same applicants.
5. **Performance.** An approved loan that defaults (90+ days past due) does so after ``months_to_default``
   in 4..12 months on book (three missed payments take at least four months; earlier defaults are likelier),
   on ``default_date``; it first went 30+ days past due two months before.
   ``early_delinquency`` = ever 30+ days past due within the first :data:`EARLY_MONTHS` months on book:
   the early-performance label credit teams monitor. It is 1 for loans that default early and for some that
   miss a payment and catch up (likelier the riskier the applicant), so it is correlated with ``default``
   without being it.
6. **When each label is known** (``default_known``, ``early_delinquency_known``): ``default`` on the
   day of the default, or :data:`OUTCOME_MONTHS` (12) months after origination if there was none;
   ``early_delinquency`` :data:`EARLY_MONTHS` + :data:`REPORTING_LAG_MONTHS` (3 + 1) months after
   origination, when the month-end servicing report that covers month 3 on book reaches the warehouse.

So on date D a lender knows a row's label only if the loan was approved and its known date is <= D:
:func:`known_as_of` returns exactly those rows, :func:`snapshot` is the lender's whole table as of D, and
:func:`newest_complete_month` says which application month has every label in. Everything in the package
that trains, evaluates, gates or compares models takes an ``as_of`` and refuses a label from after it
(:func:`check_known` raises :class:`LabelFromTheFuture`). The history starts at :data:`EARLIEST_MONTH`
(2021-01, month -36), so a model in early 2024 has two years of matured loans to learn from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

START = pd.Period("2024-01", freq="M")
EARLIEST_MONTH = -36            # 2021-01: the simulated history reaches back three years before month 0
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

# ---- the clock ----------------------------------------------------------------------------------------
APPROVED = "approved"
EARLY_LABEL = "early_delinquency"          # ever 30+ days past due within the first EARLY_MONTHS on book
LABELS = (TARGET, EARLY_LABEL)
KNOWN = {TARGET: "default_known", EARLY_LABEL: "early_delinquency_known"}   # the date each label is known
# Every applicant's would-be performance, declined or not: the world's record, for teaching only.
UNSEEN = "default_unseen_by_lender"
UNSEEN_EARLY = "early_delinquency_unseen_by_lender"
UNSEEN_MONTHS = "months_to_default_unseen_by_lender"    # 0 for a loan that would not default
UNSEEN_COLUMNS = (UNSEEN, UNSEEN_EARLY, UNSEEN_MONTHS)
OUTCOME_MONTHS = 12                        # the target: default within 12 months on book
EARLY_MONTHS = 3
REPORTING_LAG_MONTHS = 1                   # the month-end servicing report reaches the warehouse a month later
POLICY = {"min_credit_score": 620, "max_debt_to_income": 0.50}   # the incumbent policy that approves
_DEFAULT_MONTHS = np.arange(4, OUTCOME_MONTHS + 1)                 # 90+ days past due needs 3 missed payments
_DEFAULT_MONTH_P = 0.8 ** (_DEFAULT_MONTHS - 4) / (0.8 ** (_DEFAULT_MONTHS - 4)).sum()
_CURE_FACTOR = 0.6                         # P(early delinquency then catch-up) = 0.6 x P(default | x)
_DAYS_PER_MONTH = 30.4375


def month_label(month: int) -> str:
    """``month_label(0) == '2024-01'``: the calendar month of a batch index."""
    return str(START + int(month))


def month_start(month: int) -> pd.Timestamp:
    """The first day of month ``month`` (``month_start(0) == 2024-01-01``)."""
    return (START + int(month)).start_time


def month_end(month: int) -> pd.Timestamp:
    """The last day of month ``month`` (a date: applications are dated by day)."""
    return (START + int(month)).end_time.normalize()


class LabelFromTheFuture(ValueError):
    """A label was used before the date the lender could know it."""


def as_of_date(as_of) -> pd.Timestamp:
    """``as_of`` as a Timestamp, with a clear error when it is missing or is not a date."""
    if as_of is None:
        raise TypeError("as_of is required: the date whose knowledge you may use (e.g. '2024-04-01')")
    try:
        return pd.Timestamp(as_of)
    except (TypeError, ValueError) as error:
        raise ValueError(f"as_of must be a date such as '2024-04-01', got {as_of!r}") from error


def _check_label(label: str) -> None:
    if label not in KNOWN:
        raise ValueError(f"label must be one of {list(KNOWN)}, got {label!r}")


def label_known(batch: pd.DataFrame, as_of, label: str = TARGET) -> np.ndarray:
    """True for each row whose ``label`` the lender knows on ``as_of`` (approved, known date <= as_of)."""
    _check_label(label)
    missing = {label, KNOWN[label]} - set(batch.columns)
    if missing:
        raise ValueError(f"the batch has no {sorted(missing)} column(s): it is not a CreditStream batch "
                         f"(or the label columns were dropped)")
    known = batch[KNOWN[label]]
    return (known.notna() & (known <= as_of_date(as_of))).to_numpy()


def known_as_of(batch: pd.DataFrame, as_of, label: str = TARGET) -> pd.DataFrame:
    """The rows of ``batch`` whose ``label`` is known on ``as_of``, with the label as a plain 0/1 integer.

    Declined applicants never appear (their outcome is never observed); approved loans appear once their
    label's known date has come. The teaching-only column :data:`UNSEEN` is dropped.
    """
    rows = batch.loc[label_known(batch, as_of, label)].drop(columns=list(UNSEEN_COLUMNS), errors="ignore")
    return rows.astype({label: np.int8}).reset_index(drop=True)


def check_known(batch: pd.DataFrame, as_of, label: str = TARGET) -> None:
    """Raise :class:`LabelFromTheFuture` unless every row's ``label`` is known on ``as_of``."""
    known = label_known(batch, as_of, label)
    if not known.all():
        late = batch.loc[~known, KNOWN[label]]
        declined = int(late.isna().sum())
        latest = late.max()
        raise LabelFromTheFuture(
            f"{int((~known).sum())} of {len(batch)} rows have no {label!r} known on {as_of_date(as_of).date()}"
            f" ({declined} declined, never observed; the latest is known on "
            f"{'-' if pd.isna(latest) else latest.date()}). Select rows with known_as_of(batch, as_of).")


def snapshot(batch: pd.DataFrame, as_of) -> pd.DataFrame:
    """The lender's table on ``as_of``: applications made by then, each label only if known by then.

    Unknown labels are ``<NA>`` and their dates ``NaT``; the teaching-only :data:`UNSEEN` column is dropped.
    This is what a data warehouse export on that date would hold (and what chapter 02 versions).
    """
    as_of = as_of_date(as_of)
    view = batch.loc[batch["application_date"] <= as_of].drop(columns=list(UNSEEN_COLUMNS), errors="ignore").copy()
    for label, known_column in KNOWN.items():
        unknown = ~label_known(view, as_of, label)
        view.loc[unknown, label] = pd.NA
        view.loc[unknown, known_column] = pd.NaT
    hidden = view["default_date"] > as_of
    view.loc[hidden, ["default_date", "months_to_default"]] = pd.NA
    return view.reset_index(drop=True)


def newest_complete_month(as_of, label: str = TARGET) -> int:
    """The latest application month whose every ``label`` is known on ``as_of``.

    A loan applied for on the last day of month m has its 12-month outcome on the same day 12 months later,
    so month m is complete on the last day of month m + 12 (m + 4 for the early label): on the first day
    of month t the newest complete month is t - 13 (t - 5).
    """
    _check_label(label)
    lag = OUTCOME_MONTHS if label == TARGET else EARLY_MONTHS + REPORTING_LAG_MONTHS
    as_of = as_of_date(as_of)
    month = (as_of.to_period("M") - START).n - lag
    while month_end(month) + pd.DateOffset(months=lag) > as_of:
        month -= 1
    return month


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
        if not isinstance(month, (int, np.integer)) or month < EARLIEST_MONTH:
            raise ValueError(f"month must be a whole number >= {EARLIEST_MONTH} ({month_label(EARLIEST_MONTH)}; "
                             f"0 is {month_label(0)}), got {month!r}")
        n = self.rows_per_month if rows is None else int(rows)
        if n < 1:
            raise ValueError(f"rows must be >= 1, got {rows!r}")
        # Months before 2024-01 are negative; SeedSequence wants non-negative entropy (month % 2**32 keeps
        # months >= 0 exactly as they were drawn before the history was extended back).
        rng = np.random.default_rng([self.seed, int(month) % 2**32, n, int(replicate)])
        level = self.drift.levels(month)
        if level["label"] == 0:
            batch = self._draw(rng, n, month, level)
        else:
            batch = self._draw_label_shifted(rng, n, month, level)
        batch.insert(0, "application_id",
                     np.int64(month - EARLIEST_MONTH) * 10_000_000 + np.arange(n, dtype=np.int64))
        batch.insert(1, "month", np.int16(month))
        return _with_performance(batch, rng, month, _sigmoid(_log_odds(batch, level["concept"])))

    def months(self, months: Iterable[int]) -> pd.DataFrame:
        """Several months' batches, concatenated in the order given."""
        return pd.concat([self.month(m) for m in months], ignore_index=True)

    def labelled(self, months: Iterable[int], as_of, label: str = TARGET) -> pd.DataFrame:
        """The rows of ``months`` whose ``label`` is known on ``as_of`` (see :func:`known_as_of`)."""
        return known_as_of(self.months(months), as_of, label)

    def training_window(self, as_of, months: int = 3, label: str = TARGET) -> pd.DataFrame:
        """The latest ``months`` application months whose every ``label`` is known on ``as_of``.

        Whole months only: a month still maturing holds its early defaults but not yet its payers, so its
        known rows over-state risk (the clock figure in chapter 01 shows why).
        """
        newest = newest_complete_month(as_of, label)
        return self.labelled(range(newest - months + 1, newest + 1), as_of, label)

    def default_probability(self, batch: pd.DataFrame) -> np.ndarray:
        """The true P(default | x) for each row under its month's concept (before label shift).

        The ceiling for any model: its AUC on a batch is the best AUC a model could reach there.
        """
        months = batch["month"].to_numpy()
        by_month = {int(m): self.drift.levels(int(m))["concept"] for m in np.unique(months)}
        concept = pd.Series(months).map(by_month).to_numpy(dtype=float)
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


def _with_performance(batch: pd.DataFrame, rng: np.random.Generator, month: int,
                      p_default: np.ndarray) -> pd.DataFrame:
    """Add the application date, every applicant's would-be loan performance, and the incumbent's decision.

    Drawn after the applicants from the same generator, so the features of a month do not change. The
    performance of every applicant is kept in the ``*_unseen_by_lender`` columns; :func:`lend` applies a
    decision and fills in what the lender observes of the loans it made.
    """
    n = len(batch)
    first = month_start(month)
    days = (month_end(month) - first).days + 1
    applied = first + pd.to_timedelta(rng.integers(0, days, n), unit="D")
    outcome = batch[TARGET].to_numpy().astype(bool)
    months_to_default = rng.choice(_DEFAULT_MONTHS, size=n, p=_DEFAULT_MONTH_P)
    cured_delinquency = rng.random(n) < _CURE_FACTOR * p_default
    early = np.where(outcome, months_to_default - 2 <= EARLY_MONTHS, cured_delinquency)

    out = batch.drop(columns=[TARGET])
    out.insert(2, "application_date", pd.DatetimeIndex(applied))
    out[UNSEEN] = outcome.astype(np.int8)
    out[UNSEEN_EARLY] = early.astype(np.int8)
    out[UNSEEN_MONTHS] = np.where(outcome, months_to_default, 0).astype(np.int8)
    return lend(out, incumbent_policy(out))


def incumbent_policy(batch: pd.DataFrame) -> np.ndarray:
    """The lender's decision before any model: approve above a credit-score floor and below a DTI cap."""
    return ((batch["credit_score"] >= POLICY["min_credit_score"])
            & (batch["debt_to_income"] <= POLICY["max_debt_to_income"])).to_numpy()


def lend(batch: pd.DataFrame, approve) -> pd.DataFrame:
    """``batch`` decided by ``approve`` (one bool per row): what the lender will observe of the loans it made.

    Sets ``approved`` and, for approved rows only, ``default`` and ``early_delinquency`` with the dates they
    become known, ``months_to_default`` and ``default_date``; declined rows get ``<NA>``/``NaT``. Chapter 10
    uses it to let each arm of an A/B test decide its own applicants. The batch keeps its
    ``*_unseen_by_lender`` columns (the whole world's record); :func:`known_as_of` and :func:`snapshot` drop
    them.
    """
    approved = np.asarray(approve, dtype=bool)
    if approved.shape != (len(batch),):
        raise ValueError(f"approve needs one True/False per row ({len(batch)}), got shape {approved.shape}")
    missing = {"application_date", *UNSEEN_COLUMNS} - set(batch.columns)
    if missing:
        raise ValueError(f"lend needs a CreditStream batch with its world record; missing {sorted(missing)}")
    applied = pd.DatetimeIndex(batch["application_date"])
    outcome = batch[UNSEEN].to_numpy().astype(bool)
    months_to_default = batch[UNSEEN_MONTHS].to_numpy()
    default_date = applied + pd.to_timedelta(np.round(months_to_default * _DAYS_PER_MONTH), unit="D")
    matured = applied + pd.DateOffset(months=OUTCOME_MONTHS)
    default_known = np.where(outcome, np.minimum(default_date, matured), matured)
    early_known = applied + pd.DateOffset(months=EARLY_MONTHS + REPORTING_LAG_MONTHS)

    def observed(values, seen=approved):  # the lender observes only the loans it made
        return pd.arrays.IntegerArray(np.asarray(values, dtype=np.int8), mask=~seen)

    def dated(values, seen=approved):
        return pd.DatetimeIndex(values).where(seen)

    defaulted = approved & outcome
    observed_columns = {
        APPROVED: approved, TARGET: observed(outcome), KNOWN[TARGET]: dated(default_known),
        EARLY_LABEL: observed(batch[UNSEEN_EARLY].to_numpy()), KNOWN[EARLY_LABEL]: dated(early_known),
        "months_to_default": observed(months_to_default, defaulted),
        "default_date": dated(default_date, defaulted),
    }
    world = batch.drop(columns=[c for c in observed_columns if c in batch.columns])
    hidden = world[list(UNSEEN_COLUMNS)]
    out = world.drop(columns=list(UNSEEN_COLUMNS)).assign(**observed_columns)
    return pd.concat([out, hidden], axis=1)


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
