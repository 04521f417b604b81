"""Checks for chapter 06: testing ML systems. Each check runs the student's check, test or answer against
good and bad cases it builds itself."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

from .. import contract
from ..checks import not_attempted, verdict
from ..model_tests import THRESHOLD, scores
from ..simulator import FEATURES

POLICY = {"min_credit_score": 620, "max_debt_to_income": 0.50}


# ---- ex-06-1: a data check the student writes ----------------------------------------------------------------
def policy_exports(stream, month: int, *, as_of, rows: int = 25, seed: int = 0) -> dict[str, tuple]:
    """A clean export, one with ``rows`` declined applicants marked approved, and one with approvals exactly
    on the policy's edges: name -> (export, the row positions a correct check flags)."""
    clean = contract.faulty_export(stream, month, None, as_of=as_of)
    rng = np.random.default_rng(seed)
    declined = clean.index[~clean["approved"].astype(bool)]
    flipped = np.sort(rng.choice(declined, size=rows, replace=False))
    bad = clean.copy()
    bad.loc[flipped, "approved"] = True
    edges = clean.copy()
    loans = clean.index[clean["approved"].astype(bool)][:rows]
    edges.loc[loans, "credit_score"] = POLICY["min_credit_score"]
    edges.loc[loans, "debt_to_income"] = POLICY["max_debt_to_income"]
    return {"a clean export": (clean, []), "declined applicants marked approved": (bad, list(flipped)),
            "approvals on the policy's edges": (edges, [])}


def flagged_rows(check: pa.Check, frame: pd.DataFrame) -> list[int] | str:
    """The rows ``check`` (frame-level) flags in ``frame``, or a description of what went wrong."""
    try:
        pa.DataFrameSchema(checks=[check]).validate(frame, lazy=True)
        return []
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    raised = cases["failure_case"].astype(str).str.extract(r"^(\w+(?:Error|Exception)\(.*)", expand=False).dropna()
    if len(raised):                                   # pandera reports a check that raised as a failure case
        return f"your check raised {raised.iloc[0][:120]}"
    indices = cases["index"].dropna()
    if indices.empty:
        return "it failed the whole frame at once (return one True/False per row, not a single bool)"
    return sorted({int(i) for i in indices})


def check_policy_check(answer, stream, *, as_of, month: int | None = None) -> None:
    if not_attempted(answer):
        return verdict("ex-06-1", None, "replace the ... with a pa.Check(lambda frame: ..., name=...).")
    if not isinstance(answer, pa.Check):
        return verdict("ex-06-1", False, f"expected a pandera Check, got {type(answer).__name__}.",
                       "pa.Check(lambda frame: <a boolean Series, True where a row is fine>, name='...')")
    from ..simulator import newest_complete_month
    month = newest_complete_month(as_of) if month is None else month
    for case, (frame, expected) in policy_exports(stream, month, as_of=as_of).items():
        try:
            found = flagged_rows(answer, frame)
        except Exception as error:  # the student's function failed: say how, never crash the notebook
            return verdict("ex-06-1", False, f"on {case} your check raised {type(error).__name__}: {error}.")
        if isinstance(found, str):
            return verdict("ex-06-1", False, f"on {case}, {found}.")
        if found != expected:
            missed, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
            return verdict("ex-06-1", False, f"on {case} it flags {len(found)} rows; expected {len(expected)}"
                           f" ({len(missed)} missed, {len(extra)} flagged wrongly, e.g. row "
                           f"{(missed or extra)[0]}).",
                           "a row is fine when it is declined, or when credit_score >= 620 and "
                           "debt_to_income <= 0.50 (the edges are inside the policy).")
    return verdict("ex-06-1", True, "it passes a clean export and the policy's edges, and flags exactly the "
                   "declined applicants marked approved. Add it to the contract's checks and every export "
                   "is held to the policy that produced it.")


# ---- ex-06-2: a behavioural test the student writes ----------------------------------------------------------
class _Scores:
    """A model from a scoring function of the raw rows."""

    def __init__(self, score):
        self.score = score

    def predict_proba(self, rows):
        p = np.clip(np.asarray(self.score(rows), float), 0, 1)
        return np.column_stack([1 - p, p])


def term_models(model) -> dict[str, tuple]:
    """The project's model, one that learned the term backwards, one that ignores it:
    name -> (model, the least share of cases that must fail)."""
    backwards = _Scores(lambda rows: scores(model, rows.assign(loan_term=96 - rows["loan_term"])))
    ignores = _Scores(lambda rows: scores(model, rows.assign(loan_term=36)))
    return {"the project's model": (model, 0.0), "a model that learned the term backwards": (backwards, 0.9),
            "a model that ignores the term": (ignores, 0.0)}


def check_term_test(answer, model, applicants: pd.DataFrame, rows: int = 400) -> None:
    if not_attempted(answer):
        return verdict("ex-06-2", None, "write the function's body (replace the ...).")
    if not callable(answer):
        return verdict("ex-06-2", False, f"expected a function, got {type(answer).__name__}.")
    sample = applicants.sample(rows, random_state=0)
    results = {}
    for name, (candidate, must_fail) in term_models(model).items():
        try:
            passed = answer(candidate, sample.copy())
        except Exception as error:  # the student's function failed: say how, never crash the notebook
            return verdict("ex-06-2", False, f"on {name} your test raised {type(error).__name__}: {error}.")
        if passed is None or passed is Ellipsis:
            return verdict("ex-06-2", None, "write the function's body (replace the ...).")
        passed = np.asarray(passed)
        if passed.shape != (rows,) or passed.dtype != bool:
            return verdict("ex-06-2", False, f"expected one True/False per row ({rows}), got "
                           f"{passed.dtype} of shape {passed.shape}.",
                           "score the rows twice, with loan_term=36 and with loan_term=60, and compare.")
        results[name] = 1 - passed.mean()
        if must_fail == 0 and results[name] > 0:
            return verdict("ex-06-2", False, f"{results[name]:.0%} of the cases fail on {name}, which is "
                           f"fine.", "compare the scores of the same rows with loan_term 60 and 36; "
                           "allow float noise (1e-9).")
        if must_fail and results[name] < must_fail:
            return verdict("ex-06-2", False, f"only {results[name]:.0%} of the cases fail on {name}.",
                           "the test must fail where the 60-month score is below the 36-month score.")
    return verdict("ex-06-2", True, f"every case passes on the project's model and on one that ignores the term, "
                   f"and {results['a model that learned the term backwards']:.0%} fail on one that learned it "
                   f"backwards: a DIR test that can fail.")


# ---- ex-06-3: which layer catches it ----------------------------------------------------------------------------
def _early_as_default(export):
    out = export.copy()
    out["default"] = out["early_delinquency"].where(out["default"].notna())
    return out


EXTRA_FAULTS = {
    "income in thousands": lambda e: e.assign(income=e["income"] / 1000),
    "score rescaled": lambda e: e.assign(credit_score=np.minimum(e["credit_score"] + 40, 850)),
    "early label as default": _early_as_default,
}
_RUNS: dict = {}


def extra_fault(stream, month: int, name: str, *, as_of) -> pd.DataFrame:
    """The export of ``month`` on ``as_of`` with one of :data:`EXTRA_FAULTS`."""
    return EXTRA_FAULTS[name](contract.faulty_export(stream, month, None, as_of=as_of))


def caught_by(result: dict) -> set[str]:
    """The layers that caught a fault in a row of the chapter's ``run_layers`` (a crash is not a catch)."""
    return {layer for layer in ("code", "data", "model")
            if (result[layer] == "refused" if layer == "code" else bool(result[layer]))}


def run_extra(run_layers, stream, month: int, *, as_of) -> pd.DataFrame:
    """The chapter's ``run_layers`` on each of :data:`EXTRA_FAULTS` (each run once, then remembered)."""
    for name in EXTRA_FAULTS:
        key = (id(run_layers), name, month, str(as_of))
        if key not in _RUNS:
            _RUNS[key] = run_layers(name, month, extra_fault(stream, month, name, as_of=as_of))
    return pd.DataFrame([_RUNS[(id(run_layers), name, month, str(as_of))] for name in EXTRA_FAULTS]).set_index("fault")


def check_layers(answer, run_layers, stream, month: int, *, as_of) -> None:
    if not_attempted(answer) or (isinstance(answer, dict) and all(map(not_attempted, answer.values()))):
        return verdict("ex-06-3", None, "give a set of layers for every fault and run the cell again.")
    if not isinstance(answer, dict) or set(answer) != set(EXTRA_FAULTS):
        return verdict("ex-06-3", False, f"expected a dict with the keys {list(EXTRA_FAULTS)}.")
    table = run_extra(run_layers, stream, month, as_of=as_of)     # really run the three layers
    expected = {name: caught_by(table.loc[name]) for name in EXTRA_FAULTS}
    given = {name: set(value) if isinstance(value, (set, list, tuple, frozenset)) else value
             for name, value in answer.items()}
    wrong = [name for name in EXTRA_FAULTS if given[name] != expected[name]]
    why = "; ".join(f"{name}: {', '.join(sorted(expected[name])) or 'none'}" for name in EXTRA_FAULTS)
    if not wrong:
        return verdict("ex-06-3", True, f"{why} (from running the three layers). A value moved inside its "
                       "range passes every rule; a label that means something else is still valid 0/1 data.")
    return verdict("ex-06-3", False, f"{len(wrong)} of 3 not right: {', '.join(wrong)}.",
                   "run run_layers(name, HIT, check.extra_fault(stream, HIT, name, as_of=AS_OF)) and read the "
                   "code, data and model columns (a crash is not a catch).")


# ---- ex-06-4: the fairness gap against the threshold ---------------------------------------------------------
THRESHOLDS = np.round(np.arange(0.05, 0.31, 0.01), 2)


def largest_unfair_threshold(model, applicants: pd.DataFrame, *, as_of, age: int = 25) -> float | None:
    """The largest threshold in :data:`THRESHOLDS` at which applicants under ``age`` are approved less than
    4/5 as often as everyone else (scored once; the same rates :func:`fairness_gap` computes)."""
    made = applicants[pd.to_datetime(applicants["application_date"]) <= pd.Timestamp(as_of)]
    p, young = scores(model, made[FEATURES]), (made["age"] < age).to_numpy()
    ratios = pd.Series({t: (p[young] < t).mean() / (p[~young] < t).mean() for t in THRESHOLDS})
    unfair = ratios[ratios < 0.8]
    return float(unfair.index.max()) if len(unfair) else None


def check_unfair_threshold(answer, model, applicants: pd.DataFrame, *, as_of) -> None:
    if answer is Ellipsis:
        return verdict("ex-06-4", None, "replace the ... with a threshold (or None).")
    expected = largest_unfair_threshold(model, applicants, as_of=as_of)
    if expected is None or answer is None:
        return verdict("ex-06-4", answer is expected, "no threshold on the grid breaks the four-fifths rule."
                       if expected is None else f"at {expected:.2f} the ratio is already below 4/5.")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return verdict("ex-06-4", False, f"expected a number, got {answer!r}.")
    if abs(value - expected) < 1e-9:
        return verdict("ex-06-4", True, f"at thresholds of {expected:.2f} and below, applicants under 25 are "
                       f"approved less than 4/5 as often as others; at the project's {THRESHOLD:.3f} they are "
                       "above it. A stricter policy widens the gap: the same model, a different fairness "
                       "verdict, so the threshold belongs in the fairness review.")
    return verdict("ex-06-4", False, f"{value:g} is not it.",
                   "compute the approval ratio (under 25 / everyone else) for every threshold on the grid, keep "
                   "those below 0.8, and take the largest.")
