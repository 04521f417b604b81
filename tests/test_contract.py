"""The data contract: clean exports pass, every kind of fault is caught and named, the reference bounds keep
their stated false-alarm rate."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from scipy.stats import binom, norm

from mlops_lab.contract import (FALSE_ALARM_RATE, FAULTS, PROBLEM_COLUMNS, SCHEMA, ReferenceStats, critical_z,
                                faulty_export, reference_checks, reference_trials, trial_rates, validate)
from mlops_lab.retraining import validate_batch
from mlops_lab.simulator import (EARLY_LABEL, FEATURES, TARGET, CreditStream, Drift, newest_complete_month,
                                 snapshot)

STREAM = CreditStream(seed=11, rows_per_month=1000)
AS_OF = "2024-04-01"
TEST_MONTH = newest_complete_month(AS_OF)          # 2023-03: every label known
TRAIN_MONTH = TEST_MONTH - 2
MATURING = TEST_MONTH + 1                          # labels still arriving on AS_OF


def through_csv(frame, tmp_path):
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def reference():
    return faulty_export(STREAM, TRAIN_MONTH - 3, None, as_of=AS_OF)


def test_the_schema_is_a_pandera_schema_with_every_feature():
    assert isinstance(SCHEMA, pa.DataFrameSchema)
    assert set(FEATURES) | {"application_id", TARGET, EARLY_LABEL} <= set(SCHEMA.columns)
    assert not SCHEMA.strict, "extra columns (a month, teaching-only columns) are allowed"


@pytest.mark.parametrize("month, as_of", [(TRAIN_MONTH, AS_OF), (MATURING, AS_OF), (3, AS_OF),
                                          (0, "2024-01-20"), (-20, "2025-06-01")])
def test_clean_exports_pass_also_through_csv(tmp_path, reference, month, as_of):
    export = faulty_export(STREAM, month, None, as_of=as_of)
    assert validate(export, as_of=as_of, reference=reference).ok
    assert validate(through_csv(export, tmp_path), as_of=as_of, reference=reference).ok
    assert validate(STREAM.month(month)).ok, "the world's record (labels before they are known) is well-formed"


EXPECTED = {   # fault -> the (check, column) pairs the contract reports for it
    "missing column": {("schema: column missing", "debt_to_income")},
    "wrong type": {("schema: not a number", "income")},
    "out of range": {("out of range [0, 1.5]", "debt_to_income"), ("mean outside reference bounds", "debt_to_income")},
    "nulls": {("missing values", "income")},
    "duplicate ids": {("duplicate values", "application_id")},
    "unknown category": {("unknown category", "purpose")},
    "label from the future": {("label from the future", TARGET)},
    "label on a declined loan": {("label on a declined application", TARGET),
                                 ("label on a declined application", EARLY_LABEL)},
    "label missing after its window": {("label missing after its window closed", TARGET),
                                       ("label missing after its window closed", EARLY_LABEL)},
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_is_caught_and_named(tmp_path, reference, fault):
    month = MATURING if fault == "label from the future" else TRAIN_MONTH
    export = through_csv(faulty_export(STREAM, month, fault, as_of=AS_OF), tmp_path)
    report = validate(export, fault, as_of=AS_OF, reference=reference)
    found = set(zip(report.problems["check"], report.problems["column"]))
    if fault == "swapped labels":
        assert report.ok, "valid 0/1 labels, valid dates: only the model tests can see this one (chapter 06)"
    elif fault == "shifted distribution":
        assert found and {check for check, _ in found} <= {"mean outside reference bounds",
                                                           *(f"share of {c!r} outside reference bounds"
                                                             for c in ("debt_consolidation", "credit_card", "car",
                                                                       "home_improvement", "small_business",
                                                                       "education", "rent", "mortgage", "own"))}
        assert validate(export, as_of=AS_OF).ok, "only the reference bounds catch a shift"
    else:
        assert found == EXPECTED[fault]


def test_a_label_from_the_future_needs_the_export_date():
    export = faulty_export(STREAM, MATURING, "label from the future", as_of=AS_OF)
    assert validate(export).ok, "without as_of nothing says which dates are in the future"
    assert not validate(export, as_of=AS_OF).ok


def test_the_report_names_rows_examples_and_what_was_expected(reference):
    export = faulty_export(STREAM, TRAIN_MONTH, None, as_of=AS_OF)
    bad = export.copy()
    bad["credit_score"] = bad["credit_score"].astype(int)
    bad.loc[[7, 3, 500], "credit_score"] = [9999, 0, 851]
    bad["purpose"] = bad["purpose"].astype(object)
    bad.loc[42, "purpose"] = "crypto"
    report = validate(bad, "2023-01.csv", reference=reference)
    assert list(report.problems.columns) == PROBLEM_COLUMNS and report.name == "2023-01.csv"
    assert report.rows == len(bad)
    scores = report.problems.set_index("check").loc["out of range [300, 850]"]
    assert scores["column"] == "credit_score" and scores["rows"] == 3
    assert scores["row_index"] == [3, 7, 500], "the failing rows, in order"
    assert set(scores["examples"].split(", ")) == {"9999", "0", "851"}
    assert scores["expected"] == "between 300 and 850"
    purpose = report.problems.set_index("check").loc["unknown category"]
    assert purpose["row_index"] == [42] and purpose["examples"] == "crypto" and "'debt_consolidation'" in purpose["expected"]
    text = report.to_markdown()
    assert "fails the contract" in text and "9999" in text and "between 300 and 850" in text
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["ok"] is False and as_json["problems"][0]["row_index"] == report.problems["row_index"].iloc[0]


def test_row_indices_are_positions_and_stop_after_a_few():
    export = faulty_export(STREAM, TRAIN_MONTH, None, as_of=AS_OF)
    bad = export.set_index(export.index + 1000)            # a frame with another index: positions are reported
    bad.iloc[10:30, bad.columns.get_loc("age")] = 12
    row = validate(bad).problems.iloc[0]
    assert row["rows"] == 20 and row["row_index"] == [10, 11, 12, 13, 14]


def test_every_problem_is_collected_at_once():
    export = faulty_export(STREAM, TRAIN_MONTH, None, as_of=AS_OF)
    bad = export.drop(columns="open_accounts")
    bad.loc[0, "age"] = 17
    bad.loc[1, "loan_term"] = 48
    bad.loc[2, "employment_years"] = np.nan
    bad["age"] = bad["age"].astype(float)
    bad.loc[3, "age"] = 40.5
    found = set(zip(validate(bad).problems["check"], validate(bad).problems["column"]))
    assert found == {("schema: column missing", "open_accounts"), ("out of range [18, 100]", "age"),
                     ("value not allowed", "loan_term"), ("missing values", "employment_years"),
                     ("not a whole number", "age")}


def test_scoring_requests_need_only_the_features():
    rows = STREAM.month(1)[FEATURES]
    assert validate(rows, require_label=False).ok
    missing = set(validate(rows).problems["column"])
    assert {"application_id", TARGET, "default_known", "approved"} <= missing
    rows = rows.assign(income=-rows["income"])
    assert set(validate(rows, require_label=False).problems["check"]) == {"out of range [0, 5e+06]"}


def test_the_clock_rules_on_a_known_label():
    view = snapshot(STREAM.month(2), "2025-06-01")
    loans = view.index[view["approved"]]
    bad = view.copy()
    bad.loc[loans[0], "default_known"] = bad.loc[loans[0], "application_date"] - pd.Timedelta(days=1)
    bad.loc[loans[1], "early_delinquency_known"] = bad.loc[loans[1], "application_date"] + pd.DateOffset(months=2)
    found = set(zip(validate(bad).problems["check"], validate(bad).problems["column"]))
    assert found == {("label dated outside its window", TARGET), ("label dated outside its window", EARLY_LABEL)}


def test_validate_batch_is_the_contract():
    bad = faulty_export(STREAM, TRAIN_MONTH, "nulls", as_of=AS_OF)
    ours, kept = validate(bad, "x"), validate_batch(bad, "x")
    pd.testing.assert_frame_equal(ours.problems, kept.problems)


def test_critical_z_is_bonferroni():
    assert critical_z(1, 0.05) == pytest.approx(1.959964, abs=1e-6)
    assert critical_z(18, 0.01) == pytest.approx(norm.ppf(1 - 0.01 / 36))
    stats = ReferenceStats.of(STREAM.month(0))
    assert len(stats.values) == 9 + 3 + 6, "nine numeric means, three home and six purpose shares"


def clean_months(stream, count, rows=2000, month=-30):
    """``count`` independent clean months: one large draw of a stationary month cut into batches (the rows of
    a month are independent draws, and without drift every month has the same distribution)."""
    big = stream.month(month, rows * count)
    return [big.iloc[i * rows:(i + 1) * rows] for i in range(count)]


def test_clean_months_trip_the_bounds_at_most_at_the_stated_rate():
    # 200 clean months of the stationary history, each compared with the month before it as its reference:
    # the share that trips any bound is the false-alarm rate. The bound allows for the binomial noise of 200
    # draws (P(more) < 0.1 % if the true rate is the stated one).
    months = clean_months(CreditStream(seed=100), 201)
    z = critical_z(18, FALSE_ALARM_RATE)
    tripped = sum(ReferenceStats.of(reference).z_scores(batch).abs().max() > z
                  for reference, batch in zip(months, months[1:]))
    assert tripped <= binom.ppf(0.999, 200, FALSE_ALARM_RATE), f"{tripped} false alarms in 200 clean months"
    # ... and the bounds are not so loose that they miss a quarter-strength downturn
    shifted = clean_months(CreditStream(seed=101, drift=Drift(covariate=0.25, ramp_months=0)), 40, month=5)
    caught = sum(ReferenceStats.of(reference).z_scores(batch).abs().max() > z
                 for reference, batch in zip(months, shifted))
    assert caught >= 38, f"a quarter-strength downturn caught in only {caught} of 40 months"


def test_pandera_bounds_agree_with_the_z_scores():
    reference = STREAM.month(-30, 2000)
    checks = reference_checks(reference)
    stats = ReferenceStats.of(reference)
    for strength in (0.0, 0.15, 0.3):
        batch = replace(STREAM, drift=Drift(covariate=strength, ramp_months=0)).month(4, 2000)
        tripped = set(stats.values.index[stats.z_scores(batch).abs() > checks.metadata["z"]])
        report = validate(batch, reference=checks)
        found = {(column, check.removesuffix(" outside reference bounds"))
                 for check, column in zip(report.problems["check"], report.problems["column"])}
        assert found == tripped
        assert all(report.problems["rows"] == 2000)


def test_tolerance_shrinks_with_batch_size():
    stats = ReferenceStats.of(STREAM.month(0, 2000))
    small, large = stats.standard_error(100), stats.standard_error(100_000)
    assert (small > large).all()
    assert np.allclose(large, stats.sd * np.sqrt(1 / 100_000 + 1 / 2000))


def test_the_chapter_simulation_of_the_bounds_agrees():
    # reference_trials (vectorised, feeds chapter 06's widget) against the same rates as the checks above
    trials = reference_trials(CreditStream(seed=3), pairs=300, shifts=(0.3,))
    rates = trial_rates(trials, critical_z(18, FALSE_ALARM_RATE))
    assert rates[0.0] <= binom.ppf(0.999, 300, FALSE_ALARM_RATE) / 300 and rates[0.3] > 0.99
    assert len(trials) == 600 and set(trials["shift"]) == {0.0, 0.3}


def test_a_clean_faulty_export_is_the_snapshot():
    pd.testing.assert_frame_equal(faulty_export(STREAM, 2, None, as_of=AS_OF), snapshot(STREAM.month(2), AS_OF))
    with pytest.raises(ValueError, match="fault must be one of"):
        faulty_export(STREAM, 2, "gremlins", as_of=AS_OF)
