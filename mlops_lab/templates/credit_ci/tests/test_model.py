"""Model tests: behaviour (CheckList's INV, DIR, MFT), quality on slices, a simpler baseline, and fairness."""
import json
from pathlib import Path

import joblib
import pandas as pd
import pytest
import yaml

from mlops_lab.model_tests import baseline_gap, behavioural_suite, behaviours, fairness_gap, slice_table

PROJECT = Path(__file__).resolve().parents[1]
MODEL = joblib.load(PROJECT / "models" / "model.joblib")
SPLIT = json.loads((PROJECT / "data" / "prepared" / "split.json").read_text())
AS_OF = SPLIT["as_of"]
LABEL = yaml.safe_load((PROJECT / "params.yaml").read_text())["prepare"]["label"]   # what the model learns
DATES = ["application_date", "default_known", "early_delinquency_known"]


def export(month):
    return pd.read_csv(PROJECT / "data" / "raw" / f"{month}.csv", parse_dates=DATES)


# Everyone who applied (a decision needs no outcome), and the out-of-time loans the model never learned from.
APPLICANTS = pd.concat([export(path.stem) for path in sorted((PROJECT / "data" / "raw").glob("*.csv"))],
                       ignore_index=True)
HOLDOUT = pd.concat([export(SPLIT["validation_month"]), export(SPLIT["test_month"])], ignore_index=True)
HOLDOUT = HOLDOUT[HOLDOUT[LABEL].notna()].astype({LABEL: int})


@pytest.mark.parametrize("test", behaviours(), ids=lambda test: f"{test.kind} {test.name}")
def test_behaviour(test):
    result = behavioural_suite(MODEL, APPLICANTS, tests=[test]).iloc[0]
    assert result["passed"], f"{result['failures']} of {result['cases']} cases fail, e.g. {result['example']}"


def test_quality_on_every_slice():
    table = slice_table(MODEL, HOLDOUT, as_of=AS_OF, label=LABEL)
    failed = table[table["status"] == "FAIL"]
    assert failed.empty, failed.to_string()


def test_a_simpler_model_is_not_better():
    gap = baseline_gap(MODEL, HOLDOUT, as_of=AS_OF, label=LABEL)
    assert gap["passed"], f"AUC {gap['model_auc']:.3f} vs the credit score alone {gap['credit_score_auc']:.3f}"


def test_elderly_applicants_are_approved_at_least_four_fifths_as_often():
    gap = fairness_gap(MODEL, APPLICANTS, as_of=AS_OF, label=LABEL)
    assert gap.four_fifths_ok, gap.table.to_string()
