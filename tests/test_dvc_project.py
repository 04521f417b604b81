"""The credit pipeline project: real git and DVC, built once per module (a few seconds) and probed."""
import json
import subprocess

import joblib
import pytest
import yaml

from mlops_lab import FEATURES, CreditStream, CommandFailed
from mlops_lab import dvc_project as dp

STREAM = CreditStream(seed=2024, rows_per_month=2000)


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def dvc(repo, *args) -> str:
    return subprocess.run(["dvc", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return dp.build_credit_project(tmp_path_factory.mktemp("build") / "credit", STREAM)


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


def test_build_tracks_months_and_records_every_stage(project):
    assert sorted(p.name for p in (project / "data" / "raw").glob("*.csv")) == [
        "2024-01.csv", "2024-02.csv", "2024-03.csv"]
    tracked = git(project, "ls-files").split()
    assert "data/raw.dvc" in tracked and not any(f.startswith("data/raw/") for f in tracked)  # git stays small
    lock = dp.read_lock(project)
    assert list(lock["stages"]) == list(dp.STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["C"] == 1.0
    raw = [d for d in lock["stages"]["prepare"]["deps"] if d["path"] == "data/raw"][0]
    assert raw["md5"].endswith(".dir") and raw["nfiles"] == 3


def test_model_takes_raw_features_and_metrics_are_sane(project):
    metrics = dp.read_metrics(project)
    assert 0.65 < metrics["roc_auc"] < 0.95 and 0.8 < metrics["accuracy"] < 0.95
    assert metrics["test_rows"] == 1500
    model = joblib.load(project / "models" / "model.joblib")
    p = model.predict_proba(STREAM.month(5)[FEATURES])[:, 1]
    assert p.shape == (2000,) and 0 < p.mean() < 0.5


def test_build_is_deterministic(project, tmp_path):
    again = dp.build_credit_project(tmp_path / "again", STREAM)
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
    merged = dp.merge_params({"train": {"C": 0.1}})
    assert merged["train"] == {"C": 0.1, "class_weight": None, "max_iter": 1000}
    assert merged["prepare"] == dp.DEFAULT_PARAMS["prepare"]
    assert dp.DEFAULT_PARAMS["train"]["C"] == 1.0  # the defaults are not modified


def test_retrain_adds_a_data_version_and_reruns(tmp_path):
    repo = dp.build_credit_project(tmp_path / "credit", STREAM, months=(0,), tag=None)
    before = dp.read_lock(repo)
    metrics = dp.retrain(repo, STREAM, 1)
    assert metrics["test_rows"] == 1000 and metrics == dp.read_metrics(repo)
    after = dp.read_lock(repo)
    assert after["stages"]["train"]["outs"] != before["stages"]["train"]["outs"]
    assert git(repo, "status", "--porcelain") == "" and json.loads(dvc(repo, "status", "--json")) == {}
    assert len(git(repo, "log", "--oneline").splitlines()) == 4
    assert "data/raw.dvc" in git(repo, "show", "--name-only", "HEAD")

    # a wrong-typed parameter fails with a message that names it
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["C"] = "abc"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(CommandFailed, match=r"train\.C must be a positive number, got 'abc'"):
        dp.retrain(repo, STREAM, 2)
