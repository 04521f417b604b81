"""The running example: deterministic, vectorised, and each knob moves exactly what it claims to."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_lab.simulator import (CATEGORICAL, FEATURES, NUMERIC, TARGET, UNSEEN, CreditStream, Drift,
                                 month_label)

# These tests are about the world's generative story, so they read every applicant's outcome (UNSEEN),
# which the lender never sees for declined applicants; tests/test_clock.py covers what the lender sees.

ROWS = 40_000


def test_schema_and_ranges():
    batch = CreditStream(seed=1).month(0, rows=5_000)
    assert list(batch.columns) == (["application_id", "month", "application_date"] + FEATURES
                                   + ["approved", TARGET, "default_known", "early_delinquency",
                                      "early_delinquency_known", "months_to_default", "default_date", UNSEEN,
                                      "early_delinquency_unseen_by_lender", "months_to_default_unseen_by_lender"])
    assert batch["application_id"].is_unique
    assert set(batch[UNSEEN].unique()) == {0, 1}
    assert batch["credit_score"].between(300, 850).all()
    assert batch["debt_to_income"].between(0, 0.95).all()
    assert batch["age"].between(21, 75).all()
    assert set(batch["loan_term"].unique()) <= {36, 60}
    assert not batch[NUMERIC].isna().any().any()
    for column in CATEGORICAL:
        assert isinstance(batch[column].dtype, pd.CategoricalDtype)


def test_deterministic_by_seed_and_independent_of_order():
    stream = CreditStream(seed=3, drift=Drift(covariate=1, label=0.5, concept=1))
    later_first = stream.month(7)
    stream.month(2)
    pd.testing.assert_frame_equal(stream.month(7), later_first)
    assert not CreditStream(seed=4).month(7).equals(CreditStream(seed=3).month(7))


def test_month_zero_default_rate_is_about_ten_percent():
    assert 0.08 < CreditStream(seed=0).month(0, rows=ROWS)[UNSEEN].mean() < 0.16


def test_no_drift_means_a_stationary_world():
    stream = CreditStream(seed=5)
    early, late = stream.month(0, rows=ROWS), stream.month(12, rows=ROWS)
    assert abs(early[UNSEEN].mean() - late[UNSEEN].mean()) < 0.01
    assert abs(early["income"].median() / late["income"].median() - 1) < 0.02


def test_covariate_shift_moves_inputs_not_the_rule():
    stream = CreditStream(seed=5, drift=Drift(covariate=1.0))
    early, late = stream.month(0, rows=ROWS), stream.month(11, rows=ROWS)
    assert late["credit_score"].mean() < early["credit_score"].mean() - 15
    assert late["income"].median() < early["income"].median() * 0.9
    assert late["debt_to_income"].mean() > early["debt_to_income"].mean()
    # Same applicant, same risk: the concept (P(y|x)) is untouched by covariate shift.
    np.testing.assert_allclose(stream.default_probability(late),
                               CreditStream(seed=5).default_probability(late.assign(month=0)))


def test_label_shift_multiplies_the_odds_and_keeps_p_x_given_y():
    base = CreditStream(seed=6).month(11, rows=ROWS)
    shifted = CreditStream(seed=6, drift=Drift(label=1.0)).month(11, rows=ROWS)
    odds = lambda p: p / (1 - p)
    assert odds(shifted[UNSEEN].mean()) / odds(base[UNSEEN].mean()) == pytest.approx(np.e, rel=0.1)
    for y in (0, 1):  # what defaulters (and payers) look like does not change
        a, b = base[base[UNSEEN] == y], shifted[shifted[UNSEEN] == y]
        assert abs(a["credit_score"].mean() - b["credit_score"].mean()) < 3
    assert len(shifted) == ROWS


def test_concept_drift_changes_the_rule_and_hurts_a_stale_model():
    stream = CreditStream(seed=7, drift=Drift(concept=2.0))
    late = stream.month(11, rows=ROWS)
    old_rule = CreditStream(seed=7).default_probability(late.assign(month=0))
    new_rule = stream.default_probability(late)
    assert roc_auc_score(late[UNSEEN], new_rule) > roc_auc_score(late[UNSEEN], old_rule) + 0.02


def test_drift_ramp():
    drift = Drift(covariate=2.0, start_month=3, ramp_months=4)
    assert [drift.ramp(m) for m in (0, 2, 3, 6, 20)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert drift.levels(4)["covariate"] == pytest.approx(1.0)
    assert Drift(concept=1, start_month=2, ramp_months=0).ramp(2) == 1.0


@pytest.mark.parametrize("bad", [dict(covariate=float("nan")), dict(label="big"), dict(start_month=-1),
                                 dict(ramp_months=1.5)])
def test_bad_drift_settings_are_clear_errors(bad):
    with pytest.raises(ValueError, match="Drift"):
        Drift(**bad)


@pytest.mark.parametrize("call", [lambda s: s.month(-37), lambda s: s.month(1.5), lambda s: s.month(0, rows=0)])
def test_bad_months_are_clear_errors(call):
    with pytest.raises(ValueError):
        call(CreditStream())


def test_bad_stream_settings_are_clear_errors():
    with pytest.raises(ValueError, match="rows_per_month"):
        CreditStream(rows_per_month=0)
    with pytest.raises(TypeError, match="Drift"):
        CreditStream(drift={"covariate": 1})


def test_months_concatenates_in_order_and_labels():
    history = CreditStream(seed=1, rows_per_month=100).months([2, 0])
    assert list(history["month"].unique()) == [2, 0] and len(history) == 200
    assert month_label(0) == "2024-01" and month_label(13) == "2025-02"
