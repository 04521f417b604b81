"""A class DVC remote and tracking server (issue 15): the environment contract a chapter reads at start.

MLOPS_LAB_DVC_REMOTE (any DVC URL; a plain folder here, an ssh:// URL in class, its key from ~/.ssh/config)
and MLFLOW_TRACKING_USERNAME (the student's name in the registry).
"""
import re
import subprocess
from types import SimpleNamespace

import pytest

from mlops_lab import dvc_project as dp
from mlops_lab import registry
from mlops_lab.chapter import start_chapter

CLASS_URL = "ssh://student-01@127.0.0.1:2222/srv/mlops-class/dvc/student-01"


@pytest.fixture
def book(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "chapters").mkdir()
    monkeypatch.chdir(tmp_path / "chapters")
    for name in ("MLOPS_LAB_ROOT", "MLOPS_LAB_DVC_REMOTE", "MLFLOW_TRACKING_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_without_a_class_remote_each_repo_has_a_folder_remote_beside_it(book):
    chapter = start_chapter("99_demo")
    assert chapter.dvc_remote is None and "DVC remote: a folder in the workspace" in repr(chapter)
    assert dp.remote_url(chapter.workspace / "credit") == str(chapter.workspace / "dvc-remote" / "credit")


def test_a_class_remote_gets_one_folder_per_chapter_and_repo(book, monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_DVC_REMOTE", CLASS_URL + "/")
    monkeypatch.setattr("mlops_lab.chapter._clear_remote_folder", lambda url: None)  # no server in a unit test
    chapter = start_chapter("02_data_versioning")
    assert chapter.dvc_remote == f"{CLASS_URL}/02_data_versioning"
    assert dp.remote_url(chapter.workspace / "credit") == f"{CLASS_URL}/02_data_versioning/credit"
    assert dp.remote_url(chapter.workspace / "ci" / "credit") == f"{CLASS_URL}/02_data_versioning/ci/credit"
    start_chapter("03_pipelines_as_code")
    assert dp.remote_url(book / "workspace" / "03_pipelines_as_code" / "credit") == \
        f"{CLASS_URL}/03_pipelines_as_code/credit"


def test_the_repr_says_which_server_and_remote_without_password_or_local_path(book, monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_DVC_REMOTE", "ssh://student-01:hunter2@127.0.0.1:2222/srv/dvc/student-01")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "student-01")
    monkeypatch.setattr("mlops_lab.chapter._clear_remote_folder", lambda url: None)
    monkeypatch.setattr("mlops_lab.chapter._CLASS_TRACKING_URI", "http://admin:s3cret@127.0.0.1:5000")
    shown = repr(start_chapter("99_demo"))
    assert "MLflow: a class tracking server (http://127.0.0.1:5000 as student-01)" in shown
    assert "DVC remote: the class remote ssh://student-01@127.0.0.1:2222/srv/dvc/student-01/99_demo" in shown
    assert "hunter2" not in shown and "s3cret" not in shown and str(book) not in shown


def test_a_class_remote_folder_on_this_machine_is_shown_without_its_absolute_path(book, monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_DVC_REMOTE", str(book / "class-remote"))
    shown = repr(start_chapter("99_demo"))
    assert "MLflow: a SQLite store in the workspace" in shown and "DVC remote: the class remote" in shown
    assert str(book) not in shown


def test_a_second_run_of_a_chapter_starts_with_an_empty_remote_folder(book, monkeypatch):
    class_remote = book / "class-remote"
    monkeypatch.setenv("MLOPS_LAB_DVC_REMOTE", str(class_remote))
    start_chapter("99_demo")
    (class_remote / "99_demo" / "credit").mkdir(parents=True)
    (class_remote / "99_demo" / "credit" / "object").write_text("the first run's")
    (class_remote / "98_other").mkdir()
    start_chapter("99_demo")
    assert not (class_remote / "99_demo").exists(), "this chapter's folder is emptied"
    assert (class_remote / "98_other").is_dir(), "another chapter's folder is left alone"


def test_init_repo_pushes_to_a_class_remote_folder_and_remote_fs_sees_it(book, monkeypatch):
    class_remote = book / "class-remote"
    monkeypatch.setenv("MLOPS_LAB_DVC_REMOTE", str(class_remote))
    chapter = start_chapter("99_demo")
    repo = dp.init_repo(chapter.workspace / "credit")
    (repo / "data.txt").write_text("a data file\n")
    subprocess.run(["dvc", "add", "-q", "data.txt"], cwd=repo, check=True)
    subprocess.run(["dvc", "push", "-q"], cwd=repo, check=True)
    fs, root = dp.remote_fs(repo)
    assert root == f"{class_remote}/99_demo/credit" and len(list(fs.find(root))) == 1
    assert not (chapter.workspace / "dvc-remote").exists(), "no folder remote beside the repo"


@pytest.mark.parametrize("account, expected", [("student-07", "student-07"), ("ann@uni.edu", "ann_uni.edu")])
def test_registry_names_on_a_class_server_carry_the_mlflow_account(monkeypatch, account, expected):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", account)
    assert re.fullmatch(rf"-{re.escape(expected)}-\d{{8}}-\d{{6}}", registry.class_suffix())


def test_registry_names_fall_back_to_the_os_user(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: "jovyan")
    assert re.fullmatch(r"-jovyan-\d{8}-\d{6}", registry.class_suffix())


def test_start_tracking_uses_the_suffix_on_a_class_server(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "student-07")
    chapter = SimpleNamespace(uses_class_server=True, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              workspace=tmp_path)
    tracking = registry.start_tracking(chapter, "credit", "credit-model")
    assert re.fullmatch(r"credit-student-07-\d{8}-\d{6}", tracking.experiment)
    assert re.fullmatch(r"credit-model-student-07-\d{8}-\d{6}", tracking.model)
