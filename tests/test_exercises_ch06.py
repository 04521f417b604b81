"""The chapter 06 checks: right answers pass, wrong ones are caught (strict mode) with a reason."""
import numpy as np
import pandera.pandas as pa
import pytest

from mlops_lab.checks import WrongAnswer
from mlops_lab.contract import reference_checks, validate
from mlops_lab.exercises import ch06
from mlops_lab.models import train
from mlops_lab.simulator import CreditStream, newest_complete_month

AS_OF = "2024-04-01"
STREAM = CreditStream(seed=31, rows_per_month=1500)
HIT = newest_complete_month(AS_OF) - 2


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


@pytest.fixture(scope="module")
def model():
    return train(STREAM.training_window(AS_OF, months=3), as_of=AS_OF)


@pytest.fixture(scope="module")
def applicants():
    return STREAM.months(range(newest_complete_month(AS_OF) - 1, newest_complete_month(AS_OF) + 3))


# ---- ex-06-1 --------------------------------------------------------------------------------------------------
def policy(frame, strict_edges=False):
    approved = frame["approved"].astype(bool)
    if strict_edges:
        return ~approved | ((frame["credit_score"] > 620) & (frame["debt_to_income"] < 0.50))
    return ~approved | ((frame["credit_score"] >= 620) & (frame["debt_to_income"] <= 0.50))


def test_a_correct_policy_check_passes(capsys):
    ch06.check_policy_check(pa.Check(policy, name="approved within policy"), STREAM, as_of=AS_OF)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (pa.Check(lambda f: policy(f, strict_edges=True)), "rows; expected 0"),
    (pa.Check(lambda f: (f["credit_score"] >= 620) & (f["debt_to_income"] <= 0.50)), "a clean export"),
    (pa.Check(lambda f: bool(policy(f).all())), "whole frame"),
    (pa.Check(lambda f: f["no_such_column"] > 0), "raised KeyError"),
    ("credit_score >= 620", "expected a pandera Check"),
])
def test_a_wrong_policy_check_is_caught(wrong, message):
    with pytest.raises(WrongAnswer, match=message):
        ch06.check_policy_check(wrong, STREAM, as_of=AS_OF)


def test_policy_exports_flag_exactly_the_flipped_rows():
    cases = ch06.policy_exports(STREAM, HIT, as_of=AS_OF)
    bad, flipped = cases["declined applicants marked approved"]
    assert len(flipped) == 25 and bad.loc[flipped, "approved"].all()
    assert ch06.flagged_rows(pa.Check(policy), bad) == flipped
    edges, _ = cases["approvals on the policy's edges"]
    assert ((edges["credit_score"] == 620) & (edges["debt_to_income"] == 0.5) & edges["approved"]).sum() == 25


def test_not_attempted_never_raises(capsys, model, applicants):
    ch06.check_policy_check(..., STREAM, as_of=AS_OF)
    ch06.check_term_test(lambda model, rows: ..., model, applicants)
    ch06.check_layers({name: ... for name in ch06.EXTRA_FAULTS}, None, STREAM, HIT, as_of=AS_OF)
    ch06.check_unfair_threshold(..., model, applicants, as_of=AS_OF)
    assert capsys.readouterr().out.count("not attempted") == 4


# ---- ex-06-2 --------------------------------------------------------------------------------------------------
def term_test(model, rows):
    short = model.predict_proba(rows.assign(loan_term=36))[:, 1]
    return model.predict_proba(rows.assign(loan_term=60))[:, 1] >= short - 1e-9


def test_a_correct_term_test_passes(capsys, model, applicants):
    ch06.check_term_test(term_test, model, applicants)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda model, rows: np.ones(len(rows), bool), "only 0%"),                       # cannot fail
    (lambda model, rows: model.predict_proba(rows.assign(loan_term=60))[:, 1]        # strict: equal scores fail
     > model.predict_proba(rows.assign(loan_term=36))[:, 1], "ignores the term"),
    (lambda model, rows: term_test(model, rows).mean(), "one True/False per row"),
    (lambda model, rows: rows["no_such_column"], "raised KeyError"),
])
def test_a_wrong_term_test_is_caught(model, applicants, wrong, message):
    with pytest.raises(WrongAnswer, match=message):
        ch06.check_term_test(wrong, model, applicants)


def test_the_project_model_learned_the_term_the_right_way(model, applicants):
    # the premise of ex-06-2: a 60-month term carries more risk in the simulator, and the model learned it
    assert term_test(model, applicants.head(500)).all()


# ---- ex-06-3 --------------------------------------------------------------------------------------------------
def fake_layers(fault, month, export):
    """Stands in for the chapter's run_layers: the data layer really runs, the others as the chapter found."""
    reference = reference_checks(ch06.contract.faulty_export(STREAM, HIT - 2, None, as_of=AS_OF),
                                 false_alarm_rate=0.0025)
    data = not validate(export, as_of=AS_OF, reference=reference).ok
    return {"fault": fault, "code": "trained", "data": data, "model": False}


def test_the_extra_faults_are_what_they_say():
    clean = ch06.contract.faulty_export(STREAM, HIT, None, as_of=AS_OF)
    thousands = ch06.extra_fault(STREAM, HIT, "income in thousands", as_of=AS_OF)
    assert np.allclose(thousands["income"] * 1000, clean["income"])
    rescaled = ch06.extra_fault(STREAM, HIT, "score rescaled", as_of=AS_OF)
    assert (rescaled["credit_score"] <= 850).all() and (rescaled["credit_score"] >= clean["credit_score"]).all()
    early = ch06.extra_fault(STREAM, HIT, "early label as default", as_of=AS_OF)
    loans = clean["default"].notna()
    assert (early.loc[loans, "default"] == clean.loc[loans, "early_delinquency"]).all()
    assert early.loc[~loans, "default"].isna().all()


def test_check_layers_uses_the_layers_it_runs(capsys):
    table = ch06.run_extra(fake_layers, STREAM, HIT, as_of=AS_OF)
    right = {name: ch06.caught_by(table.loc[name]) for name in ch06.EXTRA_FAULTS}
    assert right == {"income in thousands": {"data"}, "score rescaled": {"data"}, "early label as default": set()}
    ch06.check_layers(right, fake_layers, STREAM, HIT, as_of=AS_OF)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="score rescaled"):
        ch06.check_layers({**right, "score rescaled": {"data", "model"}}, fake_layers, STREAM, HIT, as_of=AS_OF)
    with pytest.raises(WrongAnswer, match="keys"):
        ch06.check_layers({"income in thousands": {"data"}}, fake_layers, STREAM, HIT, as_of=AS_OF)


def test_a_crash_is_not_a_catch():
    assert ch06.caught_by({"code": "crashed", "data": False, "model": False}) == set()
    assert ch06.caught_by({"code": "refused", "data": True, "model": True}) == {"code", "data", "model"}


# ---- ex-06-4 --------------------------------------------------------------------------------------------------
def test_the_unfair_threshold_matches_the_fairness_gap(model, applicants):
    from mlops_lab.model_tests import fairness_gap

    expected = ch06.largest_unfair_threshold(model, applicants, as_of=AS_OF)
    young = ("under 25", lambda rows: (rows["age"] < 25).to_numpy())
    ratios = {t: fairness_gap(model, applicants, as_of=AS_OF, threshold=t, group=young).approval_ratio
              for t in ch06.THRESHOLDS}
    below = [t for t, r in ratios.items() if r < 0.8]
    assert expected == (max(below) if below else None)


def test_check_unfair_threshold(capsys, model, applicants):
    expected = ch06.largest_unfair_threshold(model, applicants, as_of=AS_OF)
    assert expected is not None, "on this stream a strict enough lender breaks the four-fifths rule"
    ch06.check_unfair_threshold(expected, model, applicants, as_of=AS_OF)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer):
        ch06.check_unfair_threshold(round(expected + 0.01, 2), model, applicants, as_of=AS_OF)
    with pytest.raises(WrongAnswer):
        ch06.check_unfair_threshold(None, model, applicants, as_of=AS_OF)
    with pytest.raises(WrongAnswer, match="expected a number"):
        ch06.check_unfair_threshold("low", model, applicants, as_of=AS_OF)
