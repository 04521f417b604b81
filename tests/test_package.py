"""The lab kit's plumbing: chapter setup, the shell helper, background servers and exercise checks."""
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from mlops_lab import checks
from mlops_lab.chapter import book_root, start_chapter
from mlops_lab.servers import BackgroundServer, ServerFailed, running_servers
from mlops_lab.shell import CommandFailed, clean, sh

HTTP_SERVER = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]


# -- chapter setup ---------------------------------------------------------------------------------
@pytest.fixture
def book(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "chapters").mkdir()
    monkeypatch.chdir(tmp_path / "chapters")
    monkeypatch.delenv("MLOPS_LAB_ROOT", raising=False)
    return tmp_path


def test_start_chapter_makes_a_fresh_workspace_twice(book):
    chapter = start_chapter("99_demo")
    assert chapter.workspace == book / "workspace" / "99_demo"
    (chapter.workspace / "leftover.txt").write_text("from the first run")
    again = start_chapter("99_demo")
    assert again.workspace.is_dir() and not (again.workspace / "leftover.txt").exists()


def test_start_chapter_fixes_seeds_and_silences_telemetry(book):
    start_chapter("99_demo", seed=11)
    first = np.random.rand(3)
    start_chapter("99_demo", seed=11)
    np.testing.assert_array_equal(first, np.random.rand(3))
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["DVC_NO_ANALYTICS"] == "1"


def test_tracking_uri_points_into_the_workspace_unless_a_class_server_is_set(book, monkeypatch):
    chapter = start_chapter("99_demo")
    assert chapter.tracking_uri == f"sqlite:///{chapter.workspace / 'mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == chapter.tracking_uri
    assert "workspace/99_demo/" in repr(chapter) and str(book) not in repr(chapter)
    monkeypatch.setattr("mlops_lab.chapter._CLASS_TRACKING_URI", "http://127.0.0.1:5000")
    assert start_chapter("99_demo").tracking_uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize("name", ["", "../escape", ".hidden", "a/b"])
def test_start_chapter_rejects_odd_names(book, name):
    with pytest.raises(ValueError, match="chapter name"):
        start_chapter(name)


def test_book_root_walks_up_to_the_toc(book, monkeypatch):
    assert book_root() == book
    monkeypatch.setenv("MLOPS_LAB_ROOT", str(book / "chapters"))
    assert book_root() == book / "chapters"


# -- shell helper ----------------------------------------------------------------------------------
def test_sh_echoes_and_returns_output(capsys, tmp_path):
    out = sh("git --version", cwd=tmp_path)
    printed = capsys.readouterr().out
    assert printed.startswith("$ git --version\n") and "git version" in out


def test_sh_raises_with_the_output_on_failure(tmp_path):
    with pytest.raises(CommandFailed) as failure:
        sh("git log", cwd=tmp_path, echo=False)  # not a repository
    assert failure.value.returncode != 0 and "not a git repository" in str(failure.value)
    assert sh("git log", cwd=tmp_path, echo=False, check=False)


def test_sh_reports_a_missing_program_clearly():
    with pytest.raises(CommandFailed, match="command not found"):
        sh("no-such-program-here --help", echo=False)


def test_clean_strips_colour_progress_and_machine_paths(tmp_path):
    raw = f"\x1b[32mok\x1b[0m\nprogress 10%\rprogress 100%\nwrote {tmp_path}/data.csv\n"
    assert clean(raw, cwd=tmp_path) == "ok\nprogress 100%\nwrote ./data.csv\n"


# -- background servers ----------------------------------------------------------------------------
def test_server_starts_on_a_free_port_serves_and_stops(tmp_path):
    server = BackgroundServer(HTTP_SERVER, name="files", health_path="/", cwd=tmp_path).start()
    pid = server.process.pid
    assert server.running and server in running_servers()
    server.stop()
    assert not server.running and not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert server not in running_servers()


def test_server_stops_its_children_too(tmp_path):
    # A shell that starts a grandchild (like mlflow starting uvicorn): stopping must leave no orphan.
    command = ["bash", "-c", f"sleep 300 & exec {sys.executable} -m http.server {{port}} --bind 127.0.0.1"]
    with BackgroundServer(command, name="family", cwd=tmp_path) as server:
        family = psutil.Process(server.process.pid).children(recursive=True) + [psutil.Process(server.process.pid)]
        assert len(family) >= 2
    time.sleep(0.2)
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_server_that_dies_reports_its_log():
    with pytest.raises(ServerFailed, match="exited with status 3"):
        BackgroundServer(["bash", "-c", "echo broken config; exit 3"], name="bad").start()


def test_server_that_never_gets_healthy_is_stopped():
    server = BackgroundServer(["sleep", "30"], name="mute", startup_timeout=1)
    with pytest.raises(ServerFailed, match="not healthy"):
        server.start()
    assert not server.running


def test_server_dies_with_its_parent(tmp_path):
    # A kernel killed with SIGKILL runs no cleanup; PR_SET_PDEATHSIG still takes its servers down.
    script = ("from mlops_lab.servers import BackgroundServer; import sys, time;"
              "s = BackgroundServer([sys.executable, '-m', 'http.server', '{port}', '--bind', '127.0.0.1']).start();"
              "print(s.process.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    parent.stdout.close()


# -- exercise checks -------------------------------------------------------------------------------
def test_checks_say_not_attempted_right_and_wrong(capsys, monkeypatch):
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)
    assert checks.check_number("ex", ..., 3.0) is None
    checks.check_number("ex", 3.05, 3.0, tolerance=0.1, why="close enough")
    checks.check_number("ex", 4, 3.0, tolerance=0.1, hint="look again")
    checks.check_number("ex", "three", 3.0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[ex] not attempted yet")
    assert out[1] == "[ex] correct: close enough"
    assert out[2].startswith("[ex] not quite") and out[3] == "  hint: look again"
    assert "expected a number" in out[4]


def test_strict_mode_raises_only_on_wrong_answers(monkeypatch, capsys):
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    checks.check_choice("ex", None, "b")
    checks.check_choice("ex", "B ", "b")
    with pytest.raises(checks.WrongAnswer):
        checks.check_choice("ex", "a", "b")
    with pytest.raises(checks.WrongAnswer, match="not one of the options"):
        checks.check_choice("ex", "z", "b", choices=["a", "b"])


def test_checks_accept_an_answer_however_it_is_written(capsys, monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")            # a wrong verdict would raise
    checks.check_choice("ex", "1", 1)
    checks.check_choice("ex", 2.0, "2", choices=[1, 2, 3])
    checks.check_choice("ex", " Canary ", "canary", choices=["canary", "linear"])
    checks.check_mapping("ex", {"a": "0", "b": "Level"}, {"a": 0, "b": "level"})
    checks.check_number("ex", "3.0", 3)
    assert capsys.readouterr().out.count("correct") == 5


def test_wrong_answers_say_which_way_and_what_was_accepted(capsys, monkeypatch):
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)
    checks.check_number("ex", 5, 3.0, tolerance=0.5)
    checks.check_number("ex", 1, 3.0, tolerance=0.1, relative=True)
    checks.check_choice("ex", "linear", "canary", choices=["canary", "linear"])
    out = capsys.readouterr().out.splitlines()
    assert "5 is too high" in out[0] and "within 0.5 of the expected value" in out[0]
    assert "1 is too low" in out[1] and "within 0.3 of" in out[1]
    assert "a valid option (one of ['canary', 'linear']), but not the right one" in out[2]


def test_check_mapping_names_the_wrong_keys(capsys, monkeypatch):
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)
    expected = {"a": 0, "b": 1, "c": 2}
    checks.check_mapping("ex", {"a": ..., "b": ..., "c": ...}, expected)
    checks.check_mapping("ex", {"a": 0, "b": 2}, expected)
    checks.check_mapping("ex", {"a": 0, "b": 1, "c": 2}, expected, why={"a": "because"})
    out = capsys.readouterr().out
    assert "not attempted yet" in out and "missing: c" in out and "1 of 3 not right: b" in out
    assert "correct: every entry is right.\n  - a: because" in out
