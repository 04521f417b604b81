"""The book's clock: a label exists only from the date the lender could know it, and nothing uses it earlier."""
import numpy as np
import pandas as pd
import pytest

from mlops_lab.models import evaluate, train
from mlops_lab.simulator import (APPROVED, EARLY_LABEL, KNOWN, OUTCOME_MONTHS, TARGET, UNSEEN, CreditStream,
                                 Drift, LabelFromTheFuture, check_known, known_as_of, lend, month_end, month_start,
                                 newest_complete_month, snapshot)

STREAM = CreditStream(seed=11, rows_per_month=4000)


@pytest.fixture(scope="module")
def batch():
    return STREAM.month(0)


def test_declined_applicants_have_no_observed_outcome(batch):
    declined = batch[~batch[APPROVED]]
    assert 0.05 < len(declined) / len(batch) < 0.3
    assert declined[TARGET].isna().all() and declined[EARLY_LABEL].isna().all()
    assert declined[KNOWN[TARGET]].isna().all()
    # The counterfactual outcome exists for teaching, and declined applicants were riskier.
    assert declined[UNSEEN].notna().all()
    assert declined[UNSEEN].mean() > 2 * batch.loc[batch[APPROVED], UNSEEN].mean()
    approved = batch[batch[APPROVED]]
    assert (approved[TARGET].astype(int) == approved[UNSEEN]).all()


def test_known_dates_follow_the_story(batch):
    loans = batch[batch[APPROVED]]
    matured = loans["application_date"] + pd.DateOffset(months=OUTCOME_MONTHS)
    defaulted = loans[TARGET] == 1
    # A default is known the day it happens (4 to 12 months on book); a payer at 12 months on book.
    assert (loans.loc[defaulted, KNOWN[TARGET]] == loans.loc[defaulted, "default_date"]).all()
    assert (loans.loc[defaulted, KNOWN[TARGET]] <= matured[defaulted]).all()
    assert (loans.loc[defaulted, "default_date"] >= loans.loc[defaulted, "application_date"]
            + pd.Timedelta(days=115)).all()
    assert (loans.loc[~defaulted, KNOWN[TARGET]] == matured[~defaulted]).all()
    early_known = loans["application_date"] + pd.DateOffset(months=4)
    assert (loans[KNOWN[EARLY_LABEL]] == early_known).all()
    assert batch["application_date"].between(month_start(0), month_end(0)).all()


def test_early_label_is_correlated_with_the_target_without_being_it(batch):
    loans = batch[batch[APPROVED]]
    y, early = loans[TARGET].astype(int), loans[EARLY_LABEL].astype(int)
    assert early.mean() > 0.02 and (early != y).mean() > 0.03
    assert early[y == 1].mean() > 3 * early[y == 0].mean()


def test_known_as_of_returns_only_labels_known_then(batch):
    for as_of in ["2024-03-01", "2024-09-15", "2025-01-20", "2025-02-01"]:
        rows = known_as_of(batch, as_of)
        assert (rows[KNOWN[TARGET]] <= pd.Timestamp(as_of)).all()
        assert rows[TARGET].isin([0, 1]).all() and UNSEEN not in rows
    assert len(known_as_of(batch, "2024-01-31")) == 0          # nothing has defaulted in the first month
    assert len(known_as_of(batch, "2025-02-01")) == batch[APPROVED].sum()
    partial = known_as_of(batch, "2024-09-01")                 # only early defaults are in: a biased sample
    assert len(partial) > 0 and partial[TARGET].mean() == 1


def test_newest_complete_month_is_thirteen_months_back_on_the_first_of_a_month():
    assert newest_complete_month("2024-01-01") == -13
    assert newest_complete_month("2024-01-30") == -13
    assert newest_complete_month("2024-01-31") == -12      # 2023-01-31 + 12 months
    assert newest_complete_month("2024-01-01", EARLY_LABEL) == -5
    # And it is really complete: every approved row of that month is known, none of the next month is.
    as_of = "2024-06-01"
    m = newest_complete_month(as_of)
    done, next_ = STREAM.month(m), STREAM.month(m + 1)
    assert len(known_as_of(done, as_of)) == done[APPROVED].sum()
    assert len(known_as_of(next_, as_of)) < next_[APPROVED].sum()


def test_history_reaches_back_before_2024():
    old = STREAM.month(-36, rows=100)
    assert old["application_date"].min() >= pd.Timestamp("2021-01-01")
    assert (old["application_id"] >= 0).all()
    with pytest.raises(ValueError, match="2021-01"):
        STREAM.month(-37)
    window = STREAM.training_window("2024-01-01", months=3)
    assert sorted(window["month"].unique()) == [-15, -14, -13]


def test_months_from_zero_keep_their_features_after_the_history_was_extended():
    # Drawn from the same generator before the performance history: the features did not move.
    batch = CreditStream(seed=0).month(0, rows=3)
    assert batch["credit_score"].tolist() == CreditStream(seed=0).month(0, rows=3)["credit_score"].tolist()


def test_snapshot_is_what_the_lender_knows(batch):
    view = snapshot(batch, "2024-01-15")
    assert (view["application_date"] <= pd.Timestamp("2024-01-15")).all() and UNSEEN not in view
    assert view[TARGET].isna().all()
    later = snapshot(batch, "2024-10-01")
    known = later[TARGET].notna()
    assert known.any() and (later.loc[known, TARGET] == 1).all()
    assert later["default_date"].dropna().max() <= pd.Timestamp("2024-10-01")


@pytest.mark.parametrize("use", ["train", "evaluate"])
def test_models_refuse_a_label_from_the_future(batch, use):
    as_of = "2024-06-01"
    past = STREAM.training_window(as_of)
    model = train(past, as_of=as_of)
    future = batch[batch[APPROVED]]                            # January's loans mature in January 2025
    with pytest.raises(LabelFromTheFuture, match="known on 2024-06-01"):
        train(future, as_of=as_of) if use == "train" else evaluate(model, future, as_of=as_of)
    with pytest.raises(LabelFromTheFuture, match="declined"):
        check_known(batch, "2026-01-01")                      # declined rows never have a label
    with pytest.raises(TypeError, match="as_of is required"):
        train(past, as_of=None)
    assert evaluate(model, known_as_of(batch, "2025-02-01"), as_of="2025-02-01")["auc"] > 0.7


def test_lend_applies_another_decision_to_the_same_applicants(batch):
    approve_all = lend(batch, np.ones(len(batch), bool))
    assert approve_all[TARGET].notna().all()
    assert (approve_all[TARGET].astype(int) == batch[UNSEEN]).all()
    # The incumbent's own decision reproduces the batch exactly.
    pd.testing.assert_frame_equal(lend(batch, batch[APPROVED].to_numpy()), batch)
    with pytest.raises(ValueError, match="one True/False per row"):
        lend(batch, [True])
    with pytest.raises(ValueError, match="world record"):
        lend(known_as_of(batch, "2026-01-01"), np.ones(batch[APPROVED].sum(), bool))


def test_label_shift_keeps_the_clock():
    shifted = CreditStream(seed=3, rows_per_month=3000, drift=Drift(label=1.0)).month(6)
    assert shifted["application_date"].between(month_start(6), month_end(6)).all()
    loans = shifted[shifted[APPROVED]]
    assert (loans[TARGET].astype(int) == loans[UNSEEN]).all()
