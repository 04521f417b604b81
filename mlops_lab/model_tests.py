"""Model tests for the credit model: behaviour in the spirit of CheckList, slices, a simpler baseline, fairness.

A model here is anything with ``predict_proba`` that takes raw application columns: the Pipeline of
:func:`mlops_lab.models.train`, or the DVC project's ``models/model.joblib``. Its score is P(default).

- :func:`behavioural_suite` runs CheckList's three kinds of test {Ribeiro et al. 2020}, generated in bulk
  from real rows, not from a handful of hand-written cases:

  - **INV** (invariance): what must not change a score. Columns that are not features (the application id,
    dates, labels, the simulator's teaching-only ``*_unseen_by_lender`` outcomes) are shuffled among the
    rows: a model that reads one (a leak) changes its scores. Row order and batch composition are changed:
    a model that normalises by its batch changes its scores.
  - **DIR** (directional expectation): a higher debt-to-income never lowers predicted risk, a higher credit
    score never raises it, more recent delinquencies never lower it. These are the directions the lender's
    credit policy and its adverse-action reasons rest on (a notice that says "debt-to-income too high" must
    be true of the model), and they hold in the simulator by construction; a flexible model (boosted trees)
    can break them locally where data is thin.
  - **MFT** (minimum functionality): clear-cut applicants built from real rows (a prime profile must be
    approved, a deep-subprime one declined) at the decision threshold.

- :func:`slice_table`: AUC on the slices the simulator defines (purpose, home ownership, term, an age band),
  each with its Hanley-McNeil standard error. The floor is the AUC of the bureau credit score alone on the
  whole holdout (what a lender gets without any model); a slice fails only when its AUC is below the floor
  beyond noise (its upper one-sided bound, Bonferroni over the slices, is under the floor), and a slice too
  small to catch even a useless model (AUC 0.5) is reported as "too small", never as a pass or a failure.
- :func:`baseline_gap`: the model's AUC minus the credit score's on the same rows, with DeLong's interval
  for two correlated AUCs: a simpler model is not better (ML Test Score, Model 5).
- :func:`fairness_gap`: approval rates of an age band against everyone else (applicants aged 62 and over
  are "elderly" under ECOA's Regulation B, 12 CFR 1002.2(o)), their ratio (the four-fifths rule of thumb),
  and among the loans whose outcome is known, the gaps in default rate among the approved and in the rate
  of declined good payers (false declines).

Everything that reads a label takes ``as_of`` and refuses a label not known then (:func:`check_known`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from .monitoring import auc_se, auc_with_se
from .simulator import (EARLY_MONTHS, FEATURES, HOME, OUTCOME_MONTHS, PURPOSES, REPORTING_LAG_MONTHS, TARGET,
                        check_known, known_as_of)

ELDERLY_AGE = 62          # ECOA / Regulation B: an applicant aged 62 or older is "elderly" (12 CFR 1002.2(o))
COST_MISSED_DEFAULT, COST_DECLINED_PAYER = 5.0, 1.0   # the DVC project's evaluate costs (chapter 03)
# Approve when the expected cost of approving, p * 5, is below that of declining, (1 - p) * 1: p < 1/6.
THRESHOLD = COST_DECLINED_PAYER / (COST_DECLINED_PAYER + COST_MISSED_DEFAULT)
TOLERANCE = 1e-9          # a score "changes" when it moves more than float noise
SUITE_COLUMNS = ["test", "kind", "cases", "failures", "failure_rate", "passed", "example"]


def scores(model, rows: pd.DataFrame) -> np.ndarray:
    """P(default) for each row."""
    return np.asarray(model.predict_proba(rows)[:, 1], dtype=float)


# ---- behavioural tests: each returns (cases, failed: bool array, example of a failure) -------------------
@dataclass(frozen=True)
class Behaviour:
    name: str
    kind: str                      # INV, DIR or MFT
    run: Callable = field(repr=False)


def _example(rows, failed, before, after, what="") -> str:
    if not failed.any():
        return ""
    i = int(np.flatnonzero(failed)[0])
    return f"row {rows.index[i]}{what}: P(default) {before[i]:.4f} -> {after[i]:.4f}"


def _non_features_do_not_matter(model, rows, rng):
    """INV: shuffle every column that is not a feature among the rows; no score may move."""
    extra = [c for c in rows.columns if c not in FEATURES]
    shuffled = rows.copy()
    for column in extra:
        shuffled[column] = rows[column].to_numpy()[rng.permutation(len(rows))]
    before, after = scores(model, rows), scores(model, shuffled)
    try:
        alone = scores(model, rows[FEATURES])
    except (KeyError, ValueError) as error:   # the model needs a column that is not a feature
        return len(rows), np.ones(len(rows), bool), f"fails on the features alone: {type(error).__name__}: {error}"
    failed = (np.abs(after - before) > TOLERANCE) | (np.abs(alone - before) > TOLERANCE)
    return len(rows), failed, _example(rows, failed, before, after, f" ({len(extra)} non-feature columns shuffled)")


def _order_and_batch_do_not_matter(model, rows, rng):
    """INV: score the rows in another order and in two other batches; each row's score must not move."""
    before = scores(model, rows)
    order = rng.permutation(len(rows))
    shuffled = np.empty(len(rows))
    shuffled[order] = scores(model, rows.iloc[order])
    half = len(rows) // 2
    split = np.concatenate([scores(model, rows.iloc[:half]), scores(model, rows.iloc[half:])])
    single = scores(model, rows.iloc[[0]])                    # a batch of one
    failed = (np.abs(shuffled - before) > TOLERANCE) | (np.abs(split - before) > TOLERANCE)
    failed[0] |= abs(single[0] - before[0]) > TOLERANCE
    return len(rows), failed, _example(rows, failed, before, np.where(np.abs(shuffled - before) > TOLERANCE,
                                                                      shuffled, split), " (reordered/rebatched)")


def _direction(column: str, steps, sign: int, high: float):
    """DIR: raising ``column`` by each of ``steps`` (capped at ``high``) moves the score only in ``sign``.
    One case per row and step."""
    def run(model, rows, rng):
        base = scores(model, rows)
        failed, after = [], []
        for step in steps:
            moved = rows.assign(**{column: np.minimum(rows[column].astype(float) + step, high)})
            after.append(scores(model, moved))
            failed.append(sign * (after[-1] - base) < -TOLERANCE)
        failed, after = np.concatenate(failed), np.concatenate(after)
        tiled = pd.concat([rows] * len(steps))
        return len(failed), failed, _example(tiled, failed, np.tile(base, len(steps)), after, f" ({column} raised)")
    return run


def _clear_cut(profile: dict, approve: bool, threshold: float):
    """MFT: real rows given a clear-cut credit profile must be decided as ``approve`` at ``threshold``."""
    def run(model, rows, rng):
        extreme = rows.assign(**profile)
        p = scores(model, extreme)
        failed = (p >= threshold) if approve else (p < threshold)
        return len(rows), failed, _example(rows, failed, scores(model, rows), p, f" given {profile}")
    return run


PRIME = {"credit_score": 800, "debt_to_income": 0.10, "delinquencies_2y": 0}
DEEP_SUBPRIME = {"credit_score": 520, "debt_to_income": 0.65, "delinquencies_2y": 3}


def behaviours(threshold: float = THRESHOLD) -> list[Behaviour]:
    """The suite: two INV, three DIR and two MFT tests (see the module's docstring for why each)."""
    return [
        Behaviour("non-feature columns do not change a score", "INV", _non_features_do_not_matter),
        Behaviour("row order and batch do not change a score", "INV", _order_and_batch_do_not_matter),
        Behaviour("higher debt_to_income never lowers risk", "DIR",
                  _direction("debt_to_income", (0.05, 0.1, 0.2), +1, 1.5)),
        Behaviour("higher credit_score never raises risk", "DIR",
                  _direction("credit_score", (10, 30, 60), -1, 850)),
        Behaviour("more delinquencies_2y never lower risk", "DIR", _direction("delinquencies_2y", (1, 2), +1, 50)),
        Behaviour("prime applicants are approved", "MFT", _clear_cut(PRIME, True, threshold)),
        Behaviour("deep-subprime applicants are declined", "MFT", _clear_cut(DEEP_SUBPRIME, False, threshold)),
    ]


def behavioural_suite(model, frame: pd.DataFrame, *, as_of=None, rows: int = 500, threshold: float = THRESHOLD,
                      seed: int = 0, tests: list[Behaviour] | None = None) -> pd.DataFrame:
    """Run every behavioural test on ``rows`` real rows of ``frame`` (applications made by ``as_of`` if given).

    No label is read: the cases are applicants, perturbed. A test passes when none of its cases fails (each
    is an exact property of a credit model, so one failure is a finding). Columns: test, kind, cases,
    failures, failure_rate, passed, example (the first failing case).
    """
    if as_of is not None and "application_date" in frame:
        frame = frame[pd.to_datetime(frame["application_date"]) <= pd.Timestamp(as_of)]
    rng = np.random.default_rng(seed)
    sample = frame.sample(min(rows, len(frame)), random_state=seed) if len(frame) > rows else frame
    out = []
    for test in tests or behaviours(threshold):
        cases, failed, example = test.run(model, sample, rng)
        failures = int(np.sum(failed))
        out.append({"test": test.name, "kind": test.kind, "cases": cases, "failures": failures,
                    "failure_rate": failures / cases, "passed": failures == 0, "example": example})
    return pd.DataFrame(out, columns=SUITE_COLUMNS)


# ---- slices ---------------------------------------------------------------------------------------------------
def age_band(age) -> pd.Series:
    age = pd.Series(age)
    return pd.cut(age, [0, 24, ELDERLY_AGE - 1, 200], labels=["under 25", f"25-{ELDERLY_AGE - 1}",
                                                              f"{ELDERLY_AGE}+"]).astype(str)


def slices(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The slices the simulator defines: purpose, home ownership, term and an age band (name -> row mask)."""
    out = {"all": np.ones(len(frame), bool)}
    out |= {f"purpose={p}": (frame["purpose"].astype(str) == p).to_numpy() for p in PURPOSES}
    out |= {f"home_ownership={h}": (frame["home_ownership"].astype(str) == h).to_numpy() for h in HOME}
    out |= {f"loan_term={t}": (frame["loan_term"] == t).to_numpy() for t in (36, 60)}
    band = age_band(frame["age"].to_numpy())
    out |= {f"age {b}": (band == b).to_numpy() for b in ("under 25", f"25-{ELDERLY_AGE - 1}", f"{ELDERLY_AGE}+")}
    return out


def credit_score_auc(frame: pd.DataFrame, label: str = TARGET) -> float:
    """The AUC of the bureau credit score alone (a lower score, more risk): the floor a model must beat."""
    return float(roc_auc_score(frame[label].astype(int), -frame["credit_score"].astype(float)))


def slice_table(model, frame: pd.DataFrame, *, as_of, label: str = TARGET, min_rows: int = 1,
                floor: float | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """AUC on every slice of ``frame`` (rows whose ``label`` is known on ``as_of``), judged against ``floor``.

    ``floor`` defaults to :func:`credit_score_auc` on all of ``frame``. A slice FAILS when even the upper
    bound of its AUC, ``auc + z * se`` (one-sided, Bonferroni over the slices judged, family error
    ``alpha``), is below the floor. It is "too small" when fewer than ``min_rows`` rows, or when a useless
    model (AUC 0.5) would pass there too: ``0.5 + z * se(0.5)`` is not below the floor. Columns: slice,
    rows, positives, auc, se, lower, upper, floor, status.
    """
    check_known(frame, as_of, label)
    y = frame[label].to_numpy(dtype=int)
    p = scores(model, frame)
    floor = credit_score_auc(frame, label) if floor is None else float(floor)
    rows = []
    for name, mask in slices(frame).items():
        n_pos, n_neg = int(y[mask].sum()), int((1 - y[mask]).sum())
        auc, se = auc_with_se(y[mask], p[mask]) if n_pos and n_neg else (np.nan, np.nan)
        rows.append({"slice": name, "rows": int(mask.sum()), "positives": n_pos, "auc": auc, "se": se,
                     "se_if_useless": auc_se(0.5, n_pos, n_neg) if n_pos and n_neg else np.nan})
    table = pd.DataFrame(rows)
    judgeable = (table["rows"] >= min_rows) & table["auc"].notna()
    z = norm.ppf(1 - alpha / max(int(judgeable.sum()), 1))
    judged = judgeable & (0.5 + z * table["se_if_useless"] < floor)
    table["lower"], table["upper"] = table["auc"] - z * table["se"], table["auc"] + z * table["se"]
    table["floor"] = floor
    table["status"] = np.where(~judged, "too small", np.where(table["upper"] < floor, "FAIL", "pass"))
    table.attrs.update(z=float(z), as_of=str(pd.Timestamp(as_of).date()), label=label)
    return table.drop(columns="se_if_useless")


def baseline_gap(model, frame: pd.DataFrame, *, as_of, label: str = TARGET, alpha: float = 0.05) -> dict:
    """AUC(model) - AUC(credit score alone) on the same rows, with DeLong's interval for two correlated AUCs
    (:func:`mlops_lab.gates.delong`): the model passes when the interval's lower end is above 0 (a simpler
    model is not better)."""
    from .gates import delong

    check_known(frame, as_of, label)
    y = frame[label].to_numpy(dtype=int)
    aucs, cov, _ = delong(y, np.vstack([-frame["credit_score"].to_numpy(dtype=float), scores(model, frame)]))
    gap, se = float(aucs[1] - aucs[0]), float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    z = float(norm.ppf(1 - alpha / 2))
    return {"model_auc": float(aucs[1]), "credit_score_auc": float(aucs[0]), "gap": gap, "se": se,
            "lower": gap - z * se, "upper": gap + z * se, "passed": bool(gap - z * se > 0), "rows": int(len(y))}


# ---- fairness -----------------------------------------------------------------------------------------------
def elderly(rows: pd.DataFrame) -> np.ndarray:
    return (pd.to_numeric(rows["age"]) >= ELDERLY_AGE).to_numpy()


@dataclass(frozen=True)
class FairnessGap:
    """Decisions for a group against everyone else; ``table`` has one row per group."""

    group: str
    threshold: float
    table: pd.DataFrame
    approval_ratio: float          # the group's approval rate / the others'
    ratio_interval: tuple          # 95 % interval of that ratio (normal on the log scale)
    default_rate_gap: float        # among approved loans with a known outcome: group - others
    default_rate_gap_se: float
    false_decline_gap: float       # among good payers with a known outcome: share declined, group - others
    false_decline_gap_se: float
    as_of: str

    @property
    def four_fifths_ok(self) -> bool:
        """The four-fifths rule of thumb: the group is approved at least 4/5 as often as the others."""
        return self.approval_ratio >= 0.8

    def to_dict(self) -> dict:
        return {"group": self.group, "threshold": self.threshold, "approval_ratio": self.approval_ratio,
                "ratio_interval": list(self.ratio_interval), "four_fifths_ok": self.four_fifths_ok,
                "default_rate_gap": self.default_rate_gap, "default_rate_gap_se": self.default_rate_gap_se,
                "false_decline_gap": self.false_decline_gap, "false_decline_gap_se": self.false_decline_gap_se,
                "as_of": self.as_of, "table": self.table.reset_index().to_dict(orient="records")}


def fairness_gap(model, frame: pd.DataFrame, *, as_of, threshold: float = THRESHOLD, label: str = TARGET,
                 group: tuple[str, Callable] = (f"aged {ELDERLY_AGE}+", elderly)) -> FairnessGap:
    """How the model's decisions at ``threshold`` differ between ``group`` (a name and a row mask) and the rest.

    Approval rates use every applicant of ``frame`` made by ``as_of`` (a decision needs no outcome). The
    outcome gaps use only the loans whose ``label`` window had closed by ``as_of`` (every such outcome is
    known, good or bad): the lender's past loans, approved by the incumbent policy, so they describe the
    model on the kind of applicant that policy approved (declined applicants have no outcome: the
    reject-inference problem).
    """
    name, member = group
    applicants = frame[pd.to_datetime(frame["application_date"]) <= pd.Timestamp(as_of)] \
        if "application_date" in frame else frame
    approved = scores(model, applicants) < threshold
    in_group = np.asarray(member(applicants), bool)
    # Outcomes only of loans whose window has closed: a maturing loan is known early only if it defaulted,
    # so counting it would over-state risk (chapter 01's clock figure).
    window = pd.DateOffset(months=OUTCOME_MONTHS if label == TARGET else EARLY_MONTHS + REPORTING_LAG_MONTHS)
    closed = pd.to_datetime(frame["application_date"]) + window <= pd.Timestamp(as_of)
    loans = known_as_of(frame[closed], as_of, label)
    check_known(loans, as_of, label)
    loan_approved = scores(model, loans) < threshold
    loan_group = np.asarray(member(loans), bool)
    y = loans[label].to_numpy(dtype=int)

    def stats(mask, loan_mask):
        ok, good = loan_mask & loan_approved, loan_mask & (y == 0)
        return {"applicants": int(mask.sum()), "approval_rate": approved[mask].mean(),
                "loans_known": int(loan_mask.sum()), "approved_loans": int(ok.sum()),
                "default_rate_among_approved": y[ok].mean() if ok.any() else np.nan,
                "good_payers": int(good.sum()),
                "false_decline_rate": (~loan_approved[good]).mean() if good.any() else np.nan}

    table = pd.DataFrame({name: stats(in_group, loan_group), "everyone else": stats(~in_group, ~loan_group)}).T
    g, o = table.loc[name], table.loc["everyone else"]

    def diff_se(p1, n1, p2, n2):
        return float(np.sqrt(p1 * (1 - p1) / max(n1, 1) + p2 * (1 - p2) / max(n2, 1)))

    with np.errstate(divide="ignore", invalid="ignore"):   # nobody approved: no ratio, no interval
        ratio = float(g["approval_rate"] / o["approval_rate"])
        log_se = np.sqrt((1 - g["approval_rate"]) / (g["approval_rate"] * g["applicants"])
                         + (1 - o["approval_rate"]) / (o["approval_rate"] * o["applicants"]))
    return FairnessGap(
        group=name, threshold=float(threshold), table=table, approval_ratio=ratio,
        ratio_interval=(float(ratio * np.exp(-1.96 * log_se)), float(ratio * np.exp(1.96 * log_se)))
        if np.isfinite(log_se) else (float("nan"), float("nan")),
        default_rate_gap=float(g["default_rate_among_approved"] - o["default_rate_among_approved"]),
        default_rate_gap_se=diff_se(g["default_rate_among_approved"], g["approved_loans"],
                                    o["default_rate_among_approved"], o["approved_loans"]),
        false_decline_gap=float(g["false_decline_rate"] - o["false_decline_rate"]),
        false_decline_gap_se=diff_se(g["false_decline_rate"], g["good_payers"], o["false_decline_rate"],
                                     o["good_payers"]),
        as_of=str(pd.Timestamp(as_of).date()))
