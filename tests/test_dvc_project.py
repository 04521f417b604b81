"""The credit pipeline project on the book's clock: real git and DVC, built once per module and probed."""
import hashlib
import json
import subprocess

import joblib
import pandas as pd
import pytest
import yaml

from mlops_lab import FEATURES, CommandFailed, CreditStream, month_label, newest_complete_month, snapshot
from mlops_lab import dvc_project as dp
from mlops_lab.simulator import UNSEEN_COLUMNS, known_as_of

STREAM = CreditStream(seed=2024, rows_per_month=2000)
SMALL = CreditStream(seed=5, rows_per_month=300)
AS_OF = "2024-04-01"


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def dvc(repo, *args) -> str:
    return subprocess.run(["dvc", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def set_params(repo, section, **values):
    params = dp.read_params(repo)
    params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module", autouse=True)
def folder_remote():
    """These tests are about the folder remote beside the repo: a class remote in the environment (issue 15,
    tests/test_class_remote.py) would send the pushes elsewhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLOPS_LAB_DVC_REMOTE", raising=False)
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return dp.build_credit_project(tmp_path_factory.mktemp("build") / "credit", STREAM, as_of=AS_OF)


def test_build_makes_a_clean_tagged_repo_with_a_pushed_remote(project):
    assert git(project, "status", "--porcelain") == ""
    assert git(project, "tag").split() == ["v1.0"]
    assert json.loads(dvc(project, "status", "--json")) == {}
    assert json.loads(dvc(project, "status", "--cloud", "--json")) == {}  # everything is in the remote
    remote = dp.remote_path(project)
    assert remote.parent.parent == project.parent and any((remote / "files").rglob("*"))
    assert not remote.is_relative_to(project)
    config = (project / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "remote = storage" in config


def test_default_window_ends_at_the_month_of_as_of_and_starts_at_the_first_training_month():
    months = dp.default_months(AS_OF)
    test_month = newest_complete_month(AS_OF)                 # 2023-03 on 2024-04-01 (t - 13)
    assert month_label(test_month) == "2023-03"
    assert months == range(test_month - 4, 4)                 # 3 training + validation + test, then maturing
    assert month_label(months[0]) == "2022-11" and month_label(months[-1]) == "2024-04"
    early = dp.default_months(AS_OF, "early_delinquency", window_months=1)
    assert early == range(newest_complete_month(AS_OF, "early_delinquency") - 2, 4)


def test_raw_months_are_the_warehouse_export_on_as_of(project):
    files = sorted((project / "data" / "raw").glob("*.csv"))
    assert [f.stem for f in files] == [month_label(m) for m in dp.default_months(AS_OF)]
    for month in (-10, 0, 3):   # complete, maturing, and the month of as_of (applications of its first day)
        path = project / "data" / "raw" / f"{month_label(month)}.csv"
        expected = snapshot(STREAM.month(month), AS_OF)
        assert path.read_text() == expected.to_csv(index=False)
        written = pd.read_csv(path, parse_dates=["application_date", "default_known"])
        assert not set(UNSEEN_COLUMNS) & set(written.columns), "the lender never sees the counterfactual"
        assert (written["application_date"] <= AS_OF).all()
        assert (written["default_known"].dropna() <= AS_OF).all(), "no label from after the export date"
        assert written.loc[~written["approved"], "default"].isna().all(), "declined: never observed"
    april = pd.read_csv(project / "data" / "raw" / "2024-04.csv")
    assert 0 < len(april) < 2000 and april["default"].isna().all()


def test_prepare_trains_on_complete_months_and_tests_out_of_time(project):
    metrics = dp.read_metrics(project)
    assert {k: metrics[k] for k in ("as_of", "label", "train_months", "validation_month", "test_month")} == {
        "as_of": AS_OF, "label": "default", "train_months": "2022-11..2023-01",
        "validation_month": "2023-02", "test_month": "2023-03"}
    prepared = {name: pd.read_csv(project / "data" / "prepared" / f"{name}.csv", parse_dates=["label_known"])
                for name in ("train", "validation", "test")}
    for name, rows in prepared.items():
        assert (rows["label_known"] <= AS_OF).all(), name
    assert set(prepared["train"]["month"]) == {"2022-11", "2022-12", "2023-01"}
    assert set(prepared["test"]["month"]) == {"2023-03"}
    # exactly the approved loans of those months, every one labelled on as_of (whole months)
    expected = known_as_of(STREAM.months(range(-14, -11)), AS_OF)
    assert len(prepared["train"]) == len(expected) == metrics["train_rows"]
    assert len(expected) == STREAM.months(range(-14, -11))["approved"].sum()
    assert prepared["train"]["label"].tolist() == expected["default"].tolist()
    assert metrics["test_rows"] == len(prepared["test"]) and metrics["validation_rows"] == len(prepared["validation"])


def test_lock_records_every_stage_and_the_environment(project):
    tracked = git(project, "ls-files").split()
    assert "data/raw.dvc" in tracked and not any(f.startswith("data/raw/") for f in tracked)  # git stays small
    assert "requirements.txt" in tracked
    lock = dp.read_lock(project)
    assert list(lock["stages"]) == list(dp.STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["C"] == 1.0
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["prepare"]["as_of"] == AS_OF
    raw = [d for d in lock["stages"]["prepare"]["deps"] if d["path"] == "data/raw"][0]
    assert raw["md5"].endswith(".dir") and raw["nfiles"] == len(dp.default_months(AS_OF))
    environment = [d for d in lock["stages"]["train"]["deps"] if d["path"] == "requirements.txt"][0]
    assert environment["md5"] == md5(dp.lock_file_source()) == md5(project / "requirements.txt")


def test_model_takes_raw_features_and_metrics_are_sane(project):
    metrics = dp.read_metrics(project)
    assert 0.65 < metrics["roc_auc"] < 0.95 and 0.8 < metrics["accuracy"] < 0.95
    assert 0.65 < metrics["validation_roc_auc"] < 0.95
    model = joblib.load(project / "models" / "model.joblib")
    p = model.predict_proba(STREAM.month(5)[FEATURES])[:, 1]
    assert p.shape == (2000,) and 0 < p.mean() < 0.5
    assert set(dp.numeric_metrics(metrics)) == {k for k, v in metrics.items() if not isinstance(v, str)}


def test_build_is_deterministic(project, tmp_path):
    again = dp.build_credit_project(tmp_path / "again", STREAM, as_of=AS_OF)
    for stage in dp.STAGES:
        outs = lambda repo: [(o["path"], o["md5"]) for o in dp.read_lock(repo)["stages"][stage].get("outs", [])]
        assert outs(again) == outs(project), stage
    assert dp.read_metrics(again) == dp.read_metrics(project)


def test_every_commit_can_be_pushed_and_read_back_from_a_fresh_clone(project, tmp_path):
    dvc(project, "push", "--all-commits")
    assert "in sync" in dvc(project, "status", "--cloud", "--all-commits")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    from dvc.api import read

    old = read("data/raw/2024-01.csv", repo=str(clone), rev="v1.0")
    assert old == (project / "data" / "raw" / "2024-01.csv").read_text()


def test_sh_hides_machine_paths_in_the_echoed_command(capsys, tmp_path):
    from mlops_lab import sh

    sh(["ls", str(tmp_path)], cwd=tmp_path)
    assert capsys.readouterr().out.splitlines()[0] == "$ ls ."


def test_params_override_one_key_and_keep_the_rest():
    merged = dp.merge_params({"train": {"C": 0.1}, "prepare": {"as_of": pd.Timestamp("2024-05-01")}})
    assert merged["train"] == {"C": 0.1, "class_weight": None, "max_iter": 1000}
    assert merged["prepare"] == {**dp.DEFAULT_PARAMS["prepare"], "as_of": "2024-05-01"}
    assert dp.DEFAULT_PARAMS["train"]["C"] == 1.0 and dp.DEFAULT_PARAMS["prepare"]["as_of"] is None


def test_build_refuses_a_conflicting_as_of(tmp_path):
    with pytest.raises(ValueError, match="differs from as_of"):
        dp.build_credit_project(tmp_path / "x", SMALL, as_of=AS_OF, params={"prepare": {"as_of": "2024-05-01"}})
    with pytest.raises(TypeError):
        dp.build_credit_project(tmp_path / "y", SMALL)  # as_of is required


@pytest.fixture
def small(tmp_path):
    """A small project: one training month, on the early label (complete from month m + 5)."""
    return dp.build_credit_project(tmp_path / "credit", SMALL, as_of=AS_OF, tag=None,
                                   params={"prepare": {"label": "early_delinquency", "window_months": 1}})


def test_retrain_advances_the_clock(small):
    repo = small
    before = dp.read_metrics(repo)
    assert before["test_month"] == month_label(newest_complete_month(AS_OF, "early_delinquency")) == "2023-11"
    lock_before = dp.read_lock(repo)
    january = repo / "data" / "raw" / "2024-01.csv"
    january_before = pd.read_csv(january)
    commits = len(git(repo, "log", "--oneline").splitlines())

    metrics = dp.retrain(repo, SMALL, as_of="2024-06-01")
    assert metrics == dp.read_metrics(repo) and metrics["as_of"] == "2024-06-01"
    assert metrics["test_month"] == "2024-01" and metrics["train_months"] == "2023-11..2023-11"
    # late outcomes rewrote a month that was already there: a file that really changes
    january_after = pd.read_csv(january)
    assert january_after["application_id"].tolist() == january_before["application_id"].tolist()
    assert january_after["early_delinquency"].notna().sum() > january_before["early_delinquency"].notna().sum()
    assert january.read_text() == snapshot(SMALL.month(0), "2024-06-01").to_csv(index=False)
    # the months applied for since were added
    assert {"2024-05.csv", "2024-06.csv"} <= {p.name for p in (repo / "data" / "raw").glob("*.csv")}
    after = dp.read_lock(repo)
    assert after["stages"]["train"]["outs"] != lock_before["stages"]["train"]["outs"]
    assert git(repo, "status", "--porcelain") == "" and json.loads(dvc(repo, "status", "--json")) == {}
    assert json.loads(dvc(repo, "status", "--cloud", "--json")) == {}
    assert len(git(repo, "log", "--oneline").splitlines()) == commits + 1
    assert {"data/raw.dvc", "params.yaml", "dvc.lock"} <= set(git(repo, "show", "--name-only", "--format=", "HEAD").split())

    with pytest.raises(ValueError, match="forward"):
        dp.retrain(repo, SMALL, as_of="2024-05-01")
    switched = dp.retrain(repo, SMALL, as_of="2024-06-01", label="default")
    assert switched["label"] == "default" and switched["test_month"] == month_label(newest_complete_month("2024-06-01"))


def test_prepare_refuses_labels_from_the_future_stale_data_and_short_windows(small):
    repo = small
    # a hand-edited export with a label known after as_of
    path = repo / "data" / "raw" / "2023-11.csv"
    data = pd.read_csv(path)
    row = data["early_delinquency_known"].first_valid_index()
    data.loc[row, "early_delinquency_known"] = "2024-05-15"
    data.to_csv(path, index=False)
    with pytest.raises(CommandFailed, match=r"1 'early_delinquency' label\(s\) of 2023-11 are known only after "
                                            r"prepare.as_of 2024-04-01"):
        dp._run("dvc repro", repo)
    git(repo, "checkout", "data/raw.dvc")   # dvc repro re-hashed the changed data source: undo both
    dvc(repo, "checkout", "--force")
    assert path.read_text() == snapshot(SMALL.month(-2), AS_OF).to_csv(index=False)

    # a clock moved past the export: complete months whose labels are not in data/raw
    set_params(repo, "prepare", as_of="2024-06-01")
    with pytest.raises(CommandFailed, match="data/raw was exported before prepare.as_of"):
        dp._run("dvc repro", repo)
    # a window the data does not cover
    set_params(repo, "prepare", as_of=AS_OF, window_months=24)
    with pytest.raises(CommandFailed, match="which data/raw lacks"):
        dp._run("dvc repro", repo)
    set_params(repo, "prepare", window_months=1, label="default_within_6_months")
    with pytest.raises(CommandFailed, match=r"prepare.label must be one of \['default', 'early_delinquency'\]"):
        dp._run("dvc repro", repo)
    # a wrong-typed parameter fails with a message that names it
    git(repo, "checkout", "params.yaml")
    set_params(repo, "train", C="abc")
    with pytest.raises(CommandFailed, match=r"train\.C must be a positive number, got 'abc'"):
        dp._run("dvc repro", repo)


def test_the_environment_reruns_training(small):
    repo = small
    with open(repo / "requirements.txt", "a") as f:
        f.write("# a new pin\n")
    ran = dp._run("dvc repro", repo)
    assert "Running stage 'train'" in ran and "Running stage 'prepare'" not in ran
    train_deps = {d["path"]: d["md5"] for d in dp.read_lock(repo)["stages"]["train"]["deps"]}
    assert train_deps["requirements.txt"] == md5(repo / "requirements.txt") != md5(dp.lock_file_source())
