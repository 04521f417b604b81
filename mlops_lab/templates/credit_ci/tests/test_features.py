"""Code tests: the pipeline's own code (src/prepare.py, src/featurize.py, src/train.py) on copies of the data.

Each stage is a script that DVC runs in the project's folder; a test runs it the same way, in a scratch copy
(tmp_path), and checks what it wrote or the message it stopped with.
"""
import contextlib
import io
import json
import runpy
import shutil
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PREPARE = yaml.safe_load((PROJECT / "params.yaml").read_text())["prepare"]
AS_OF, LABEL = pd.Timestamp(PREPARE["as_of"]), PREPARE["label"]
# Months from the end of a loan's application month until its label is known, written again from the rule:
# default within 12 months on book; an early delinquency within 3 months, reported a month later.
LAG_MONTHS = {"default": 12, "early_delinquency": 4}[LABEL]


def run(stage, folder):
    """Run src/<stage>.py in ``folder`` as DVC would; the message it stopped with, or None if it finished."""
    with contextlib.chdir(folder), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(str(PROJECT / "src" / f"{stage}.py"), run_name="__main__")
        except SystemExit as stop:
            return str(stop.code)
    return None


@pytest.fixture
def project(tmp_path):
    """A scratch copy of the raw exports and the parameters: the stages write their outputs there."""
    shutil.copytree(PROJECT / "data" / "raw", tmp_path / "data" / "raw")
    shutil.copy(PROJECT / "params.yaml", tmp_path)
    return tmp_path


def edit(folder, month, change):
    """Apply ``change`` to the raw export of ``month`` ('YYYY-MM') in ``folder``."""
    path = folder / "data" / "raw" / f"{month}.csv"
    path.write_text(change(pd.read_csv(path)).to_csv(index=False))


def set_param(folder, stage, key, value):
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params[stage][key] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def newest_complete_month(as_of, lag_months=LAG_MONTHS):
    """The oracle, written again from the rule (not imported from the code under test): the newest month
    whose last loan's label is known by as_of."""
    month = as_of.to_period("M") - lag_months
    while month.end_time.normalize() + pd.DateOffset(months=lag_months) > as_of:
        month -= 1
    return month


def test_prepare_splits_by_time_on_the_clock(project):
    assert run("prepare", project) is None
    split = json.loads((project / "data" / "prepared" / "split.json").read_text())
    test_month = newest_complete_month(AS_OF)
    assert split["test_month"] == str(test_month) and split["validation_month"] == str(test_month - 1)
    sets = {name: pd.read_csv(project / "data" / "prepared" / f"{name}.csv", parse_dates=["label_known"])
            for name in ("train", "validation", "test")}
    assert sets["train"]["month"].max() < split["validation_month"], "train, validate, test: in time order"
    for name, rows in sets.items():
        assert (rows["label_known"] <= AS_OF).all(), f"a {name} label known after {AS_OF.date()}"
        assert set(rows["label"].unique()) <= {0, 1}


def test_prepare_keeps_only_the_approved_loans(project):
    assert run("prepare", project) is None
    test = pd.read_csv(project / "data" / "prepared" / "test.csv")
    raw = pd.read_csv(project / "data" / "raw" / f"{newest_complete_month(AS_OF)}.csv")
    assert len(test) == raw["approved"].sum() < len(raw), "declined applicants have no outcome"
    assert set(test["application_id"]) == set(raw.loc[raw["approved"], "application_id"])


def test_prepare_refuses_a_label_from_the_future(project):
    def late(rows):
        rows.loc[rows["approved"].idxmax(), f"{LABEL}_known"] = str((AS_OF + pd.Timedelta(days=1)).date())
        return rows
    edit(project, newest_complete_month(AS_OF), late)
    assert "labels from the future" in run("prepare", project)


def test_prepare_refuses_an_export_older_than_its_date(project):
    def stale(rows):
        rows.loc[rows["approved"], LABEL] = np.nan         # as the warehouse held it before the outcomes came
        return rows
    edit(project, newest_complete_month(AS_OF) - 1, stale)
    assert "exported before prepare.as_of" in run("prepare", project)


@pytest.mark.parametrize("key, value, message", [("window_months", -1, "window_months must be a whole number"),
                                                 ("label", "defaulted", "label must be one of"),
                                                 ("as_of", "last April", "as_of must be a date")])
def test_prepare_names_a_bad_parameter(project, key, value, message):
    set_param(project, "prepare", key, value)
    assert message in run("prepare", project)


@pytest.fixture
def featurized(project):
    assert run("prepare", project) is None and run("featurize", project) is None
    return project


def test_featurize_learns_its_scaling_on_the_training_rows_only(featurized):
    train = pd.read_csv(featurized / "data" / "prepared" / "train.csv")
    transformer = joblib.load(featurized / "features" / "transformer.joblib")
    numeric = transformer.named_transformers_["numeric"]
    column = list(numeric.feature_names_in_).index("credit_score")
    assert numeric.mean_[column] == pytest.approx(train["credit_score"].mean())
    log_scaler = transformer.named_transformers_["log"][-1]
    assert log_scaler.mean_[0] == pytest.approx(np.log1p(train["income"]).mean()), "income is log-scaled first"


def test_featurize_writes_finite_features_and_the_labels(featurized):
    features = pd.read_csv(featurized / "features" / "train.csv")
    train = pd.read_csv(featurized / "data" / "prepared" / "train.csv")
    assert np.isfinite(features.drop(columns="label").to_numpy()).all()
    assert len(features) == len(train) and (features["label"] == train["label"]).all()


def test_featurize_drop_removes_a_feature(project):
    set_param(project, "featurize", "drop", ["credit_score"])
    assert run("prepare", project) is None and run("featurize", project) is None
    assert not any("credit_score" in c for c in pd.read_csv(project / "features" / "train.csv").columns)


def test_an_unknown_category_is_ignored_when_scoring(featurized):
    transformer = joblib.load(featurized / "features" / "transformer.joblib")
    row = pd.read_csv(featurized / "data" / "prepared" / "test.csv").head(1).assign(purpose="crypto")
    encoded = pd.DataFrame(transformer.transform(row), columns=transformer.get_feature_names_out())
    assert (encoded.filter(like="categorical__purpose_") == 0).all(axis=None)


def test_train_gives_a_model_of_raw_applications(featurized):
    assert run("train", featurized) is None
    model = joblib.load(featurized / "models" / "model.joblib")
    applicants = pd.read_csv(PROJECT / "data" / "raw" / f"{AS_OF.to_period('M') - 1}.csv")
    p = model.predict_proba(applicants)[:, 1]
    assert len(p) == len(applicants) and ((0 < p) & (p < 1)).all()
