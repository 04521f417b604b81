"""Chapters 04 and 05 against a separately started, lean ``mlflow server`` (as a class would use one).

The server: one worker, job execution off, a SQLite backend and an artifact folder in a temporary
directory, on a free 127.0.0.1 port, started and always stopped by mlops_lab.servers.BackgroundServer.
Each chapter runs in a fresh kernel with ``MLFLOW_TRACKING_URI`` set before the kernel starts (as a
student would set it before starting Jupyter); the test then asks the *server* for what the chapter made.
"""
import hashlib
import os
import sys
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient
from nbclient import NotebookClient

from mlops_lab import registry
from mlops_lab.servers import BackgroundServer

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # `mlflow server` must find the environment's executables


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class-server")
    command = [str(VENV_BIN / "mlflow"), "server", "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'class.db'}",
               "--artifacts-destination", str(folder / "artifacts"),
               "--host", "127.0.0.1", "--port", "{port}"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    with BackgroundServer(command, name="mlflow-server", health_path="/health", cwd=folder, env=env,
                          log_path=folder / "server.log", startup_timeout=120) as server:
        yield server, folder
    assert not server.running


def run_chapter(name: str, tracking_uri: str) -> None:
    notebook = nbformat.read(ROOT / "chapters" / f"{name}.ipynb", as_version=4)
    env_before = dict(os.environ)
    os.environ.update({"MLFLOW_TRACKING_URI": tracking_uri, "MLOPS_LAB_STRICT_CHECKS": "1",
                       "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
                       "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    try:  # the kernel inherits this environment, as it would from a student's shell
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "chapters")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def test_chapter_04_logs_and_registers_on_the_server(tracking_server):
    server, folder = tracking_server
    run_chapter("04_tracking_and_registry", server.url)

    client = MlflowClient(server.url)
    experiments = [e for e in client.search_experiments() if e.name.startswith("credit-risk-")]
    assert len(experiments) == 1, "the chapter logs to its own experiment on a class server"
    runs = client.search_runs([experiments[0].experiment_id], max_results=1000)
    assert len(runs) == 15 and {r.info.status for r in runs} == {"FINISHED"}
    suffix = experiments[0].name[len("credit-risk"):]
    model = client.get_registered_model("credit-risk" + suffix)
    assert {alias: str(v) for alias, v in model.aliases.items()} == {"champion": "2"}, "a rejected version keeps no alias"
    history = registry.alias_history(model.name, client)          # every move, recorded on the server too
    assert history[history["alias"] == "champion"]["version"].tolist() == ["1", "2"]
    assert client.get_model_version(model.name, "3").tags["gate.decision"] == "rejected"
    # every gate decided on a date, and the date is in the registry: the first release, then a year later
    gate_dates = [client.get_model_version(model.name, v).tags["gate.as_of"] for v in ("1", "2", "3")]
    assert gate_dates[0] == "2024-04-01" and gate_dates[0] < gate_dates[1] <= gate_dates[2]
    assert list((folder / "artifacts").rglob("learning_curve.png")), "artifacts went through the server"
    # ...and nothing into the chapter's own SQLite store
    assert not (ROOT / "workspace" / "04_tracking_and_registry" / "mlflow.db").exists()


def test_chapter_05_records_lineage_on_the_server(tracking_server):
    server, _ = tracking_server
    run_chapter("05_lineage", server.url)

    client = MlflowClient(server.url)
    experiments = [e for e in client.search_experiments() if e.name.startswith("credit-lineage-")]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert len(runs) == 3 and all("git.commit" in r.data.tags and "dvc.data_raw.md5" in r.data.tags for r in runs)
    # the environment and the clock of each run went through the server too
    lock_md5 = hashlib.md5((ROOT / "requirements.txt").read_bytes()).hexdigest()
    assert {r.data.tags["env.lock_md5"] for r in runs} == {lock_md5}
    assert sorted(r.data.tags["clock.as_of"] for r in runs) == ["2024-04-01", "2025-07-01", "2025-07-01"]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "environment")}
    assert artifacts == {"environment/requirements.txt"}
    model = client.get_registered_model("credit-risk" + experiments[0].name[len("credit-lineage"):])
    assert str(model.aliases["champion"]) == "1", "the chapter rolled back after the corrupt batch"
    assert client.get_model_version(model.name, "2").tags["quarantine"].startswith("trained on the corrupt")
    assert not (ROOT / "workspace" / "05_lineage" / "mlflow.db").exists()
