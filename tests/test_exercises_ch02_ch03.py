"""The chapter 02 and 03 checks: right answers pass, wrong ones are caught (strict mode) with a reason."""
import hashlib
import subprocess

import pytest

from mlops_lab import CreditStream
from mlops_lab import dvc_project as dp
from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch02, ch03

STREAM = CreditStream(seed=3, rows_per_month=300)


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory):
    """Four data versions, tagged data-v1..data-v4, as chapter 02 builds them."""
    repo = dp.init_repo(tmp_path_factory.mktemp("ch02") / "credit")
    for month in range(4):
        dp.add_month(repo, STREAM, month)
        subprocess.run(["git", "tag", f"data-v{month + 1}"], cwd=repo, check=True)
    return repo


def test_cache_path_is_the_md5_split_after_two_digits(data_repo, capsys):
    digest = hashlib.md5((data_repo / "data" / "raw" / "2024-03.csv").read_bytes()).hexdigest()
    assert (data_repo / ch02.cache_path(digest)).is_file()
    ch02.check_cache_path(f".dvc/cache/files/md5/{digest[:2]}/{digest[2:]}", data_repo)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="first two hex digits are a folder"):
        ch02.check_cache_path(f".dvc/cache/files/md5/{digest}", data_repo)


def test_rows_in_a_past_version_and_new_objects(data_repo, capsys):
    assert ch02.rows_in_version(data_repo, "data-v2") == 600
    ch02.check_rows_in_version(600, data_repo)
    with pytest.raises(WrongAnswer):
        ch02.check_rows_in_version(1200, data_repo)  # all four months, not the version asked about
    assert ch02.new_cache_objects(data_repo) == 2
    with pytest.raises(WrongAnswer):
        ch02.check_new_cache_objects(4, data_repo)  # as if every file were stored again


def test_tracked_by_git_is_measured(data_repo, capsys):
    right = {"data/raw.dvc": True, "data/raw/2024-01.csv": False, "data/.gitignore": True, ".dvc/config": True,
             ".dvc/cache": False}
    ch02.check_tracked_by_git(right, data_repo)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="data/raw/2024-01.csv"):
        ch02.check_tracked_by_git({**right, "data/raw/2024-01.csv": True}, data_repo)


def test_unattempted_answers_never_raise(data_repo, capsys):
    ch02.check_cache_path(..., data_repo)
    ch02.check_tracked_by_git(dict.fromkeys(ch02.GIT_TRACKED_QUESTION, ...), data_repo)
    ch03.check_reruns({k: ... for k in ch03.CHANGES}, data_repo)
    ch03.check_bad_test_size({"failed_stage": ...})
    assert capsys.readouterr().out.count("not attempted") == 4


def test_downstream_stages_come_from_dvc_yaml(tmp_path, capsys):
    dp.write_pipeline(tmp_path)
    assert ch03.downstream(tmp_path, "prepare") == set(dp.STAGES)
    assert ch03.downstream(tmp_path, "featurize") == {"featurize", "train", "evaluate"}
    assert ch03.downstream(tmp_path, "evaluate") == {"evaluate"}
    right = {"train.C": {"train", "evaluate"}, "featurize.log_scale": ["featurize", "train", "evaluate"],
             "evaluate.threshold": {"evaluate"}, "a new month in data/raw": set(dp.STAGES)}
    ch03.check_reruns(right, tmp_path)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="train.C"):
        ch03.check_reruns({**right, "train.C": {"prepare", "featurize", "train", "evaluate"}}, tmp_path)


def test_bad_test_size_answer():
    ch03.check_bad_test_size({"failed_stage": "prepare", "model_still_in_workspace": True,
                              "prepared_train_in_workspace": False})
    with pytest.raises(WrongAnswer, match="model_still_in_workspace"):
        ch03.check_bad_test_size({"failed_stage": "prepare", "model_still_in_workspace": False,
                                  "prepared_train_in_workspace": False})
