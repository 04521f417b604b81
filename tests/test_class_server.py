"""The class server for real: PostgreSQL, MLflow with basic auth and the artifact proxy, and an SSH DVC remote,
started by deploy/class_server.py; the chapters run against it as a student; then 30 students at once.

Needs root (one Unix account per student) and Debian's postgresql and openssh-server: `.ci/run` installs them
(tools/system_packages.sh). Marked ``class_server``: `make class` runs this file, `make test` includes it.
Everything binds 127.0.0.1 on free ports; the accounts, the database and every file are removed afterwards.
"""
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from conftest import skip_or_fail
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from nbclient import NotebookClient

from mlops_lab import registry
from mlops_lab.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import class_load
import class_server

pytestmark = pytest.mark.class_server
CLASS = "mlc-test"                        # prefix of every Unix account the test creates (and removes)
STUDENTS = [f"{CLASS}-s{i:02d}" for i in range(1, 31)]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def class_up():
    if os.geteuid() != 0:
        skip_or_fail("the class server needs root (one Unix account per student): `sudo -E make class`")
    for program in ("sshd", "pg_ctl"):
        try:
            class_server.postgres_bin(program) if program == "pg_ctl" else class_server.sshd_path()
        except class_server.ClassServerError as missing:
            skip_or_fail(str(missing))
    found = {name: secrets.token_urlsafe(18) for name in class_server.SECRETS}
    saved = {name: os.environ.get(name) for name in found}
    os.environ.update(found)
    home = Path(tempfile.mkdtemp(prefix="class-server-"))
    settings = class_server.Settings(home, name=CLASS, db_port=free_port(), mlflow_port=free_port(),
                                     ssh_port=free_port())
    try:
        yield class_server.up(settings, STUDENTS), found
    finally:
        class_server.down(settings, purge=True)  # also after a failed `up`: whatever it created
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.update({name: value})
    assert not home.exists(), "down --purge leaves nothing behind"
    assert subprocess.run(["id", STUDENTS[0]], capture_output=True, check=False).returncode != 0


def student_client(settings, student: str) -> MlflowClient:
    env = class_server.read_student_env(settings, student)
    os.environ.update({key: env[key] for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    return MlflowClient(settings.url)


def test_health_checks_every_part_and_no_password_but_the_admins_opens_it(class_up):
    settings, found = class_up
    results = class_server.health(settings, found["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert [check for check, ok, _ in results if not ok] == [], results
    assert len(results) == 6
    search = settings.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert class_server.http_status(search, (settings.admin, "password1234")) == 401  # MLflow's old default
    assert class_server.http_status(search, (settings.admin, found["MLFLOW_AUTH_ADMIN_PASSWORD"])) == 200


def test_a_student_cannot_read_or_change_another_students_work(class_up):
    settings, found = class_up
    owner, other = STUDENTS[0], STUDENTS[1]
    mine = student_client(settings, owner)
    experiment = mine.create_experiment("private-work")
    run_id = mine.create_run(experiment).info.run_id
    model = mine.create_registered_model("private-model").name
    version = mine.create_model_version(model, f"{mine.get_run(run_id).info.artifact_uri}/m", run_id=run_id)

    theirs = student_client(settings, other)
    for attempt in (lambda: theirs.get_experiment(experiment), lambda: theirs.log_metric(run_id, "x", 1.0),
                    lambda: theirs.set_registered_model_alias(model, "champion", version.version),
                    lambda: theirs.delete_experiment(experiment)):
        with pytest.raises(MlflowException) as refused:
            attempt()
        assert refused.value.error_code == "PERMISSION_DENIED"
    assert "private-work" not in {e.name for e in theirs.search_experiments()}

    # the instructor (MLflow's admin) reads everything
    os.environ.update({"MLFLOW_TRACKING_USERNAME": settings.admin,
                       "MLFLOW_TRACKING_PASSWORD": found["MLFLOW_AUTH_ADMIN_PASSWORD"]})
    assert MlflowClient(settings.url).get_experiment(experiment).name == "private-work"


def test_a_student_pushes_dvc_data_to_their_own_folder_and_no_other(class_up, tmp_path):
    settings, _ = class_up
    repo = tmp_path / "repo"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    dvc = [str(VENV_BIN / "dvc")]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True, env=env)
    (repo / "data.csv").write_text("a,b\n1,2\n")
    subprocess.run([*dvc, "add", "-q", "data.csv"], cwd=repo, check=True, env=env)
    md5 = hashlib.md5((repo / "data.csv").read_bytes()).hexdigest()
    env["HOME"] = str(class_load.student_home(settings, STUDENTS[0], tmp_path / "home"))
    for folder, allowed in ((STUDENTS[0], True), (STUDENTS[1], False)):
        url = f"ssh://{STUDENTS[0]}@{settings.host}:{settings.ssh_port}{settings.path('dvc', folder)}"
        subprocess.run([*dvc, "remote", "add", "-f", "-d", "class", url], cwd=repo, check=True, env=env)
        pushed = subprocess.run([*dvc, "push"], cwd=repo, env=env, capture_output=True, text=True, check=False)
        assert (pushed.returncode == 0) == allowed, pushed.stderr
    assert "Permission denied" in pushed.stderr
    assert (settings.path("dvc", STUDENTS[0], "files", "md5", md5[:2], md5[2:])).read_text() == "a,b\n1,2\n"
    assert not list(settings.path("dvc", STUDENTS[1]).rglob(md5[2:])), "refused: not in another's folder"


def run_chapter(settings, student: str, name: str) -> None:
    """Run chapter ``name`` in a fresh kernel whose environment is the student's class.env, as after `source`."""
    notebook = nbformat.read(ROOT / "chapters" / f"{name}.ipynb", as_version=4)
    env_before = dict(os.environ)
    home = class_load.student_home(settings, student, Path(tempfile.mkdtemp(prefix=f"{student}-home-")))
    os.environ.update({**class_server.read_student_env(settings, student), "HOME": str(home),
                       "MLOPS_LAB_STRICT_CHECKS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
                       "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "chapters")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        shutil.rmtree(home)


def only_experiment(client: MlflowClient, prefix: str):
    found = [e for e in client.search_experiments() if e.name.startswith(prefix)]
    assert len(found) == 1, f"one experiment named {prefix}*, found {[e.name for e in found]}"
    return found[0]


def test_chapter_04_logs_and_registers_on_the_class_server(class_up):
    settings, _ = class_up
    student = STUDENTS[2]
    run_chapter(settings, student, "04_tracking_and_registry")

    client = student_client(settings, student)
    experiment = only_experiment(client, f"credit-risk-{student}-")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == 15 and {r.info.status for r in runs} == {"FINISHED"}
    model = client.get_registered_model("credit-risk" + experiment.name[len("credit-risk"):])
    assert {alias: str(v) for alias, v in model.aliases.items()} == {"champion": "2"}, "a rejected version keeps no alias"
    history = registry.alias_history(model.name, client)
    assert history[history["alias"] == "champion"]["version"].tolist() == ["1", "2"]
    assert client.get_model_version(model.name, "3").tags["gate.decision"] == "rejected"
    gate_dates = [client.get_model_version(model.name, v).tags["gate.as_of"] for v in ("1", "2", "3")]
    assert gate_dates[0] == "2024-04-01" and gate_dates[0] < gate_dates[1] <= gate_dates[2]
    assert list(settings.path("artifacts").rglob("learning_curve.png")), "artifacts went through the server's proxy"
    assert not (ROOT / "workspace" / "04_tracking_and_registry" / "mlflow.db").exists()


def test_chapter_05_records_lineage_on_the_class_server(class_up):
    settings, _ = class_up
    student = STUDENTS[3]
    run_chapter(settings, student, "05_lineage")

    client = student_client(settings, student)
    experiment = only_experiment(client, f"credit-lineage-{student}-")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3 and all("git.commit" in r.data.tags and "dvc.data_raw.md5" in r.data.tags for r in runs)
    lock_md5 = hashlib.md5((ROOT / "requirements.txt").read_bytes()).hexdigest()
    assert {r.data.tags["env.lock_md5"] for r in runs} == {lock_md5}
    assert sorted(r.data.tags["clock.as_of"] for r in runs) == ["2024-04-01", "2025-07-01", "2025-07-01"]
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "environment")} == {"environment/requirements.txt"}
    model = client.get_registered_model("credit-risk" + experiment.name[len("credit-lineage"):])
    assert str(model.aliases["champion"]) == "1", "the chapter rolled back after the corrupt batch"
    assert client.get_model_version(model.name, "2").tags["quarantine"].startswith("trained on the corrupt")
    assert not (ROOT / "workspace" / "05_lineage" / "mlflow.db").exists()


def test_chapter_07s_pipeline_runs_log_to_the_class_server(class_up):
    settings, _ = class_up
    student = STUDENTS[4]
    run_chapter(settings, student, "07_continuous_training")

    client = student_client(settings, student)
    experiment = only_experiment(client, f"07-continuous-training-{student}-")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    # the chapter's pipeline fails once (no data yet) and refuses bad data once: FAILED runs, on the server too
    assert {r.info.status for r in runs} == {"FINISHED", "FAILED"}
    model = client.get_registered_model("credit-level1" + experiment.name[len("07-continuous-training"):])
    assert "champion" in model.aliases, "the pipeline's gate released a champion on the class server"
    assert not (ROOT / "workspace" / "07_continuous_training" / "mlflow.db").exists()


@pytest.mark.parametrize("chapter", ["02_data_versioning", "03_pipelines_as_code"])
def test_chapters_02_and_03_push_their_data_to_the_students_class_remote(class_up, chapter):
    settings, _ = class_up
    student = STUDENTS[5]
    run_chapter(settings, student, chapter)

    pushed = [p for p in settings.path("dvc", student, chapter).rglob("*") if p.is_file()]
    assert pushed, f"{chapter} pushed nothing to {student}'s class remote"
    assert {p.parent.parent.name for p in pushed} == {"md5"}, "only DVC's content-addressed objects (files/md5/ab/cd...)"
    assert not (ROOT / "workspace" / chapter / "dvc-remote").exists(), "no local remote beside the repository"


def test_thirty_students_at_once_lose_nothing_across_a_server_restart(class_up, tmp_path):
    settings, found = class_up
    result = class_load.run_class_load(settings, STUDENTS, tmp_path, restart_after=0.4)
    assert result.exit_codes == {student: 0 for student in STUDENTS}, _student_logs(tmp_path, result)
    assert result.restart_window is not None, "the MLflow server was restarted"
    before, after = result.restart_window
    assert result.acknowledged("run_finished", before=before) > 0 < result.acknowledged("run_finished", after=after), \
        "runs finished both before and after the restart: it happened mid-load"

    audit = class_load.count(settings, result.journals, found["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert audit["lost"] == []
    n = len(STUDENTS)
    expected = {"runs": n * class_load.RUNS, "metrics": n * class_load.RUNS * class_load.STEPS,
                "artifacts": n * class_load.RUNS, "versions": n * class_load.RUNS, "aliases": n * class_load.RUNS,
                "dvc_objects": n * class_load.PUSHES}
    assert {key: audit["acknowledged"][key] for key in expected} == expected
    print(json.dumps({"students": n, **audit["acknowledged"], "lost": len(audit["lost"]),
                      "seconds": round(result.seconds, 1), "restart_seconds": round(result.restart_seconds, 1),
                      "runs_per_second": round(result.runs_per_second, 2),
                      "log_call_ms_p50": round(result.latency(0.5), 1), "log_call_ms_p99": round(result.latency(0.99), 1),
                      "server_peak_mb": round(result.peak_server_mb)}))


def test_a_backup_is_a_restorable_dump_and_the_stores_archives(class_up, tmp_path):
    settings, _ = class_up
    written = class_server.backup(settings, tmp_path / "backup")
    assert sorted(p.name for p in written) == ["accounts.tar.gz", "artifacts.tar.gz", "dvc.tar.gz",
                                                "mlflow.dump", "mlflow_auth.dump"]
    listing = subprocess.run([class_server.postgres_bin("pg_restore"), "--list", str(tmp_path / "backup" / "mlflow.dump")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public runs" in listing and "TABLE DATA public model_versions" in listing


def _student_logs(folder: Path, result) -> str:
    failed = [name for name, code in result.exit_codes.items() if code != 0]
    return "\n".join(f"--- {name}\n" + (folder / name / "student.log").read_text()[-1500:] for name in failed[:3])
