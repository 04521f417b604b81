"""A class's load on the class server, then a count of everything it left: nothing acknowledged may be lost.

Each simulated student is its own process with its own MLflow account and SSH key, as 30 laptops would be.
It logs runs (metrics one call at a time, as training loops do, plus an artifact), registers each run as a new
model version and moves the ``champion`` alias to it, and pushes DVC data to its own remote folder. Every
operation the server acknowledged is appended to the student's journal at once, so a student that dies
mid-way still says what it had done. Meanwhile the driver can restart the MLflow server (SIGTERM: uvicorn
finishes the requests it holds) once a share of the runs is in; the clients ride over the gap with MLflow's own
HTTP retries. Afterwards :func:`count` checks every journal entry against the server, the artifact store and
the DVC remote, as the instructor.

    results = run_class_load(settings, students, workdir, restart_after=0.4)
    audit = count(settings, results.journals, admin_password)

Used by tests/test_class_server.py (the counts) and tools/bench_class_server.py (runs per second).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import class_server

RUNS, STEPS, ARTIFACT_KB, PUSHES, DATA_KB = 4, 20, 64, 2, 256


@dataclass
class LoadResult:
    journals: dict[str, list[dict]]
    seconds: float
    restart_window: tuple[float, float] | None  # wall-clock start and end of the server's restart

    peak_server_mb: float
    exit_codes: dict[str, int]
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def restart_seconds(self) -> float | None:
        return None if self.restart_window is None else self.restart_window[1] - self.restart_window[0]

    def acknowledged(self, op: str, before: float = float("inf"), after: float = 0.0) -> int:
        """How many ``op`` operations were acknowledged between ``after`` and ``before`` (wall clock)."""
        return sum(1 for entries in self.journals.values() for e in entries
                   if e["op"] == op and after < e["t"] < before)

    @property
    def runs_per_second(self) -> float:
        runs = sum(1 for entries in self.journals.values() for e in entries if e["op"] == "run_finished")
        return runs / self.seconds

    def latency(self, quantile: float) -> float:
        return float(np.quantile(self.latencies_ms, quantile))


# ---------------------------------------------------------------------------------------------- one student
def student(name: str, workdir: Path, go_file: Path) -> None:
    """The student's session: runs, versions, aliases, DVC pushes; every acknowledgement journaled."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    journal = (workdir / "journal.jsonl").open("a", buffering=1)

    def ack(op: str, **fields) -> None:
        journal.write(json.dumps({"op": op, "t": time.time(), **fields}) + "\n")

    client = MlflowClient()
    rng = np.random.default_rng(int(hashlib.md5(name.encode()).hexdigest()[:8], 16))
    while not go_file.exists():  # every student starts together, after their imports
        time.sleep(0.05)
    label = f"load-{name}-{go_file.parent.name}"  # a second load on the same server makes new names
    experiment_id = client.create_experiment(label)
    ack("experiment", id=experiment_id)
    model = client.create_registered_model(label).name
    ack("model", name=model)
    for index in range(RUNS):
        run_id = client.create_run(experiment_id, run_name=f"run-{index}").info.run_id
        ack("run", id=run_id)
        for step in range(STEPS):
            started = time.perf_counter()
            client.log_batch(run_id, metrics=[Metric("loss", float(rng.random()), int(time.time() * 1000), step)])
            ack("metric", run=run_id, key="loss", step=step, ms=(time.perf_counter() - started) * 1000)
        payload = workdir / f"weights-{index}.bin"
        payload.write_bytes(rng.bytes(ARTIFACT_KB * 1024))
        client.log_artifact(run_id, str(payload))
        ack("artifact", run=run_id, path=payload.name, md5=hashlib.md5(payload.read_bytes()).hexdigest())
        client.set_terminated(run_id)
        ack("run_finished", id=run_id)
        source = f"{client.get_run(run_id).info.artifact_uri}/{payload.name}"
        version = client.create_model_version(model, source, run_id=run_id).version
        ack("version", model=model, version=str(version), run=run_id)
        client.set_registered_model_alias(model, "champion", version)
        ack("alias", model=model, alias="champion", version=str(version))
    push_data(workdir, rng, ack)
    journal.close()


def push_data(workdir: Path, rng, ack) -> None:
    """``dvc add`` and ``dvc push`` through DVC's Python API, to the student's own SSH folder (the key comes
    from the student's ~/.ssh/config, as on a laptop)."""
    from dvc.repo import Repo

    repo_dir = workdir / "repo"
    subprocess.run(["git", "init", "-q", str(repo_dir)], check=True)
    repo = Repo.init(str(repo_dir))
    with repo.config.edit() as config:
        config["core"]["remote"] = "class"
        config["remote"]["class"] = {"url": os.environ["MLOPS_LAB_DVC_REMOTE"]}
    for index in range(PUSHES):
        data = repo_dir / f"batch-{index}.bin"
        data.write_bytes(rng.bytes(DATA_KB * 1024))
        repo.add(str(data))
        pushed = repo.push()
        ack("dvc_push", md5=hashlib.md5(data.read_bytes()).hexdigest(), size=data.stat().st_size, pushed=pushed)


# ---------------------------------------------------------------------------------------------- the driver
def run_class_load(settings, students: list[str], workdir: Path, *, restart_after: float | None = None,
                   timeout: float = 900) -> LoadResult:
    """Run every student at once; restart the MLflow server when ``restart_after`` of all runs are in."""
    go_file = workdir / "go"
    processes = {name: _start_student(settings, name, workdir, go_file) for name in students}
    journals = {name: workdir / name / "journal.jsonl" for name in students}
    sampler = _PeakSampler(settings)
    sampler.start()
    time.sleep(0.5)
    started = time.monotonic()
    go_file.touch()
    restart_window = None
    deadline = started + timeout
    while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
        if restart_after is not None and restart_window is None and \
                _finished_runs(journals) >= restart_after * RUNS * len(students):
            restarted = time.time()
            class_server.restart_mlflow(settings)
            restart_window = (restarted, time.time())
        time.sleep(0.2)
    seconds = time.monotonic() - started
    for process in processes.values():
        if process.poll() is None:
            process.kill()
    sampler.stop()
    entries = {name: _read_journal(path) for name, path in journals.items()}
    latencies = [e["ms"] for journal in entries.values() for e in journal if e["op"] == "metric"]
    return LoadResult(entries, seconds, restart_window, sampler.peak_mb,
                      {name: p.wait() for name, p in processes.items()}, latencies)


def _start_student(settings, name: str, workdir: Path, go_file: Path) -> subprocess.Popen:
    folder = workdir / name
    student_home(settings, name, folder)
    env = {**os.environ, **class_server.read_student_env(settings, name), "HOME": str(folder),
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    code = "import sys, class_load; class_load.student(sys.argv[1], __import__('pathlib').Path(sys.argv[2]), " \
           "__import__('pathlib').Path(sys.argv[3]))"
    log = (folder / "student.log").open("w")
    return subprocess.Popen([sys.executable, "-c", code, name, str(folder), str(go_file)], env=env,
                            cwd=Path(__file__).parent, stdout=log, stderr=subprocess.STDOUT)


def student_home(settings, name: str, home: Path) -> Path:
    """A home folder as the student's laptop would have it: ~/.ssh/config pointing at their class key."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    key = str(settings.path("accounts", name, "id_ed25519"))
    (ssh / "config").write_text(class_server.student_ssh_config(settings, name, key=key))
    return home


def _read_journal(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finished_runs(journals: dict[str, Path]) -> int:
    return sum(path.read_text().count('"op": "run_finished"') for path in journals.values() if path.exists())


class _PeakSampler(threading.Thread):
    """The peak memory of the MLflow server's and PostgreSQL's process trees, sampled every 0.5 s."""

    def __init__(self, settings):
        super().__init__(daemon=True)
        self.settings, self.peak_mb, self._done = settings, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.peak_mb = max(self.peak_mb, server_memory_mb(self.settings))

    def stop(self) -> None:
        self._done.set()
        self.join()


def server_memory_mb(settings) -> float:
    """Memory of the MLflow server (all workers) plus PostgreSQL (all backends), in MB: the sum of proportional
    set sizes (PSS), which counts PostgreSQL's shared buffers once, not once per backend as RSS would."""
    roots = []
    for pid_file in (settings.path("run", "mlflow.pid"), settings.path("pgdata", "postmaster.pid")):
        try:
            roots.append(psutil.Process(int(pid_file.read_text().split()[0])))
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            continue
    total = 0
    for root in roots:
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return total / 2**20


# ---------------------------------------------------------------------------------------------- the audit
def count(settings, journals: dict[str, list[dict]], admin_password: str) -> dict:
    """Check every acknowledged operation against the server and the remote, as the instructor."""
    from mlflow import MlflowClient

    os.environ.update({"MLFLOW_TRACKING_USERNAME": settings.admin, "MLFLOW_TRACKING_PASSWORD": admin_password,
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    client = MlflowClient(settings.url)
    tally = {key: 0 for key in ("runs", "metrics", "artifacts", "versions", "aliases", "dvc_objects")}
    lost: list[str] = []
    for student_name, entries in journals.items():
        _audit_student(client, settings, student_name, entries, tally, lost)
    tally["extra_runs"] = _extra_runs(client, journals)
    return {"acknowledged": tally, "lost": lost}


def _audit_student(client, settings, name: str, entries: list[dict], tally: dict, lost: list[str]) -> None:
    metrics: dict[str, set[int]] = {}
    for entry in entries:
        op = entry["op"]
        if op == "metric":
            metrics.setdefault(entry["run"], set()).add(entry["step"])
        elif op == "run_finished":
            tally["runs"] += 1
            if client.get_run(entry["id"]).info.status != "FINISHED":
                lost.append(f"{name}: run {entry['id']} not FINISHED")
        elif op == "artifact":
            tally["artifacts"] += 1
            local = client.download_artifacts(entry["run"], entry["path"], str(settings.path("run")))
            if hashlib.md5(Path(local).read_bytes()).hexdigest() != entry["md5"]:
                lost.append(f"{name}: artifact {entry['path']} differs")
            Path(local).unlink()
        elif op == "version":
            tally["versions"] += 1
            if client.get_model_version(entry["model"], entry["version"]).run_id != entry["run"]:
                lost.append(f"{name}: version {entry['version']} points elsewhere")
        elif op == "dvc_push":
            tally["dvc_objects"] += 1
            stored = settings.path("dvc", name, "files", "md5", entry["md5"][:2], entry["md5"][2:])
            if not stored.is_file() or hashlib.md5(stored.read_bytes()).hexdigest() != entry["md5"]:
                lost.append(f"{name}: DVC object {entry['md5']} missing from the remote")
    for run_id, steps in metrics.items():
        tally["metrics"] += len(steps)
        stored = {m.step for m in client.get_metric_history(run_id, "loss")}
        if not steps <= stored:
            lost.append(f"{name}: run {run_id} lost metric steps {sorted(steps - stored)}")
    aliases = [e for e in entries if e["op"] == "alias"]
    if aliases:
        tally["aliases"] += len(aliases)
        now = client.get_registered_model(aliases[-1]["model"]).aliases.get("champion")
        if str(now) != aliases[-1]["version"]:
            lost.append(f"{name}: champion is {now}, the last acknowledged move was to {aliases[-1]['version']}")


def _extra_runs(client, journals: dict[str, list[dict]]) -> int:
    """Runs on the server that no journal acknowledged (a create retried after the server had committed it)."""
    extra = 0
    for entries in journals.values():
        ids = [e["id"] for e in entries if e["op"] == "experiment"]
        if ids:
            known = {e["id"] for e in entries if e["op"] == "run"}
            extra += sum(1 for r in client.search_runs(ids, max_results=1000) if r.info.run_id not in known)
    return extra
