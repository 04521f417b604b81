"""The chapter 02 and 03 checks: right answers pass, wrong ones are caught (strict mode) with a reason."""
import hashlib
import json
import subprocess

import pytest
import yaml

from mlops_lab import CreditStream, sh
from mlops_lab import dvc_project as dp
from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch02, ch03

STREAM = CreditStream(seed=3, rows_per_month=300)
EXPORTS = ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]   # chapter 02's monthly exports


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory):
    """Four monthly exports (2023-01 to the month just ended), tagged data-v1..data-v4, as chapter 02 builds them."""
    repo = dp.init_repo(tmp_path_factory.mktemp("ch02") / "credit")
    for number, as_of in enumerate(EXPORTS, start=1):
        dp.add_months(repo, STREAM, range(-12, dp.newest_month(as_of)), as_of=as_of)
        subprocess.run(["git", "tag", f"data-v{number}"], cwd=repo, check=True)
    return repo


def test_cache_path_is_the_md5_split_after_two_digits(data_repo, capsys):
    digest = hashlib.md5((data_repo / "data" / "raw" / "2024-03.csv").read_bytes()).hexdigest()
    assert (data_repo / ch02.cache_path(digest)).is_file()
    ch02.check_cache_path(f".dvc/cache/files/md5/{digest[:2]}/{digest[2:]}", data_repo)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="first two hex digits are a folder"):
        ch02.check_cache_path(f".dvc/cache/files/md5/{digest}", data_repo)


def test_rows_in_a_past_version_and_new_objects(data_repo, capsys):
    assert ch02.rows_in_version(data_repo, "data-v2") == 14 * 300     # 2023-01 .. 2024-02
    ch02.check_rows_in_version(14 * 300, data_repo)
    with pytest.raises(WrongAnswer):
        ch02.check_rows_in_version(16 * 300, data_repo)  # the latest version, not the one asked about
    v3, v4 = ch02._manifest(data_repo, "data-v3"), ch02._manifest(data_repo, "data-v4")
    changed = {name for name in v4 if v3.get(name) != v4[name]}
    assert "2024-04.csv" in changed and "2023-01.csv" not in changed      # new month in; complete month kept
    assert len(changed) > 2                                              # re-stated months are new objects
    assert ch02.new_cache_objects(data_repo) == len(changed) + 1
    with pytest.raises(WrongAnswer):
        ch02.check_new_cache_objects(2, data_repo)  # as if only the new month (and a listing) were stored


def test_tracked_by_git_is_measured(data_repo, capsys):
    right = {"data/raw.dvc": True, "data/raw/2024-01.csv": False, "data/.gitignore": True, ".dvc/config": True,
             ".dvc/cache": False}
    ch02.check_tracked_by_git(right, data_repo)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="data/raw/2024-01.csv"):
        ch02.check_tracked_by_git({**right, "data/raw/2024-01.csv": True}, data_repo)


def test_labels_arrived_runs_the_students_function(data_repo, capsys):
    arrived = ch02.labels_arrived(data_repo, "data/raw/2023-04.csv", "data-v1", "data-v4")
    assert len(arrived) > 100                                     # April 2023 matured between the exports
    assert ch02.labels_arrived(data_repo, "data/raw/2023-01.csv", "data-v1", "data-v4") == set()   # complete
    ch02.check_labels_arrived(ch02.labels_arrived, data_repo)
    assert "correct" in capsys.readouterr().out

    def every_labelled_id(repo, path, old, new):   # forgets to look at the old version
        import dvc.api
        import pandas as pd
        with dvc.api.open(path, repo=str(repo), rev=new) as f:
            data = pd.read_csv(f)
        return set(data.loc[data["default"].notna(), "application_id"])

    with pytest.raises(WrongAnswer, match="too many"):
        ch02.check_labels_arrived(every_labelled_id, data_repo)
    with pytest.raises(WrongAnswer, match="raised ZeroDivisionError"):
        ch02.check_labels_arrived(lambda repo, path, old, new: 1 / 0, data_repo)
    with pytest.raises(WrongAnswer, match="expected a function"):
        ch02.check_labels_arrived({1, 2}, data_repo)


def test_unattempted_answers_never_raise(data_repo, capsys, tmp_path):
    ch02.check_cache_path(..., data_repo)
    ch02.check_tracked_by_git(dict.fromkeys(ch02.GIT_TRACKED_QUESTION, ...), data_repo)
    ch02.check_labels_arrived(..., data_repo)
    ch03.check_reruns({k: ... for k in ch03.CHANGES}, data_repo)
    ch03.check_clock_ahead({"failed_stage": ...})
    dp.write_pipeline(tmp_path)
    ch03.check_approval_stage(tmp_path)
    assert capsys.readouterr().out.count("not attempted") == 6


def test_downstream_stages_come_from_dvc_yaml(tmp_path, capsys):
    dp.write_pipeline(tmp_path)
    assert ch03.downstream(tmp_path, "prepare") == set(dp.STAGES)
    assert ch03.downstream(tmp_path, "featurize") == {"featurize", "train", "evaluate"}
    assert ch03.downstream(tmp_path, "evaluate") == {"evaluate"}
    right = {"train.C": {"train", "evaluate"}, "featurize.log_scale": ["featurize", "train", "evaluate"],
             "evaluate.threshold": {"evaluate"}, "prepare.label": set(dp.STAGES)}
    ch03.check_reruns(right, tmp_path)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="train.C"):
        ch03.check_reruns({**right, "train.C": {"prepare", "featurize", "train", "evaluate"}}, tmp_path)


def test_clock_ahead_answer():
    ch03.check_clock_ahead({"failed_stage": "prepare", "model_still_in_workspace": True,
                            "prepared_train_in_workspace": False})
    with pytest.raises(WrongAnswer, match="model_still_in_workspace"):
        ch03.check_clock_ahead({"failed_stage": "prepare", "model_still_in_workspace": False,
                                "prepared_train_in_workspace": False})


APPROVAL = '''\
import json, joblib, pandas as pd, yaml
threshold = yaml.safe_load(open("params.yaml"))["evaluate"]["threshold"]
month = json.load(open("data/prepared/split.json"))["test_month"]
applicants = pd.read_csv(f"data/raw/{month}.csv")
p = joblib.load("models/model.joblib").predict_proba(applicants)[:, 1]
json.dump({"approval_rate": float(%s)}, open("approval.json", "w"))
'''


def test_approval_stage_is_built_run_and_recomputed(tmp_path, capsys):
    repo = dp.build_credit_project(tmp_path / "credit", STREAM, as_of="2024-04-01", tag=None,
                                   params={"prepare": {"label": "early_delinquency", "window_months": 1}})
    (repo / "src" / "approval.py").write_text(APPROVAL % "(p < threshold).mean()")
    stage = ["dvc", "stage", "add", "--force", "-n", "approval", "-d", "src/approval.py", "-d", "models/model.joblib",
             "-d", "data/prepared/split.json", "-d", "data/raw", "-p", "evaluate.threshold", "-M", "approval.json",
             "python src/approval.py"]
    sh(stage, cwd=repo, echo=False)
    with pytest.raises(WrongAnswer, match="dvc.lock has no entry for approval"):
        ch03.check_approval_stage(repo)              # declared, never run
    sh("dvc repro approval", cwd=repo, echo=False)
    ch03.check_approval_stage(repo)
    assert "correct" in capsys.readouterr().out
    rate = json.loads((repo / "approval.json").read_text())["approval_rate"]
    assert rate == pytest.approx(ch03.approval_rate(repo)) and 0.5 < rate < 1

    # a wrong number: the decline rate instead of the approval rate
    (repo / "src" / "approval.py").write_text(APPROVAL % "(p >= threshold).mean()")
    sh("dvc repro approval", cwd=repo, echo=False)
    with pytest.raises(WrongAnswer, match="approval_rate is"):
        ch03.check_approval_stage(repo)
    # an undeclared dependency: the stage reads the model but does not say so
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    spec["stages"]["approval"]["deps"].remove("models/model.joblib")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(WrongAnswer, match="models/model.joblib must be a dependency"):
        ch03.check_approval_stage(repo)
