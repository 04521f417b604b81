"""Level 1 continuous training, orchestrated by Prefect 3 (chapter 07).

The Level 1 pipeline of Google's article (data extraction, data validation, preparation, training,
evaluation, model validation, registration) is chapter 03's DVC project grown by two gates
(:func:`mlops_lab.dvc_project.write_level1_pipeline`), run by a Prefect flow, :func:`level1_pipeline`:

- ``extract`` (retried on a transient failure) exports the warehouse as of the run's date into
  ``data/raw`` (or takes the data version the warehouse just committed), on the book's clock;
- ``export champion`` copies the registry's ``champion`` into the project (a dependency of the gate stage);
- one task per DVC stage, in the graph's order: the task asks DVC whether the stage is out of date
  (``dvc status``) and runs the stage's command in the flow's own Python process; once every stage has
  succeeded, ``dvc commit`` records them (the ``dvc.lock`` that ``dvc repro`` writes). A stage that fails
  stops the flow, so a batch the data contract refuses stops everything downstream, and nothing is recorded;
- ``store`` commits the run to git and pushes its artifacts to the DVC remote; ``register`` registers the
  candidate and moves ``champion`` only if the model gate passed (:func:`mlops_lab.gates.register_if_passed`).

Why stages run in the flow's process: each DVC stage is a new Python process that imports pandas and
scikit-learn again, about 2 s of a single core per stage, so ``dvc repro`` of the six stages takes 15 to
20 s a month on Binder's one core; in one warm process the same stages take 2 to 4 s. ``dvc status``
decides what runs and ``dvc commit`` records it, so ``dvc repro`` afterwards has nothing to do.

Each run records in MLflow what triggered it, the data hash (``data/raw.dvc``, the same md5 as in
``dvc.lock``), the git commit, both gates' outcomes and the decision.

**The server and the triggers.** :func:`start_server` runs ``prefect server start`` (a real Prefect
server: API, database, scheduler, automations) as a :class:`~mlops_lab.servers.BackgroundServer` with its
SQLite database in the chapter's workspace, the UI and the services a laptop does not need turned off, and
the scheduler's loops shortened to a second. :class:`LocalRunner` registers the deployment
``credit-level1/level1`` with two event triggers, runs the deployment's runs when they fall due (in this
process: see its docstring for why not in a process per run, as ``flow.serve()`` does), and hosts the tiny
webhook adapter. Three triggers:

- a **schedule**, :func:`add_schedule`: monthly on the book's clock (``Cron("0 6 1 * *")`` at a lender);
  here ``count`` ticks ``seconds_per_month`` apart, each tick mapped to a month of the simulated calendar
  by :func:`book_date`;
- **new data**: the warehouse commits a DVC-tracked export (:func:`publish_export`); the repository's
  ``post-commit`` git hook (:func:`install_new_data_hook`) posts a ``dvc.data.committed`` event to
  Prefect's events API, and the deployment's trigger runs the pipeline on it;
- an **alarm**: a monitor's alert arrives as an Alertmanager webhook (``POST /hooks/alertmanager``) at
  the adapter, which posts an ``alertmanager.alert.firing`` event. Prefect Cloud has webhooks that turn
  HTTP calls into events; Prefect's open-source server does not, so this adapter (about 30 lines) stands
  in for them.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import runpy
import shlex
import shutil
import sqlite3
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import yaml

# Before Prefect is imported (its settings are read then): no analytics, quiet logs in a notebook.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import prefect  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.events import DeploymentEventTrigger  # noqa: E402

from . import dvc_project  # noqa: E402
from .servers import BackgroundServer, free_port  # noqa: E402
from .simulator import CreditStream, Drift, month_label  # noqa: E402

FLOW_NAME, DEPLOYMENT_NAME = "credit-level1", "level1"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
NEW_DATA_EVENT, ALARM_EVENT = "dvc.data.committed", "alertmanager.alert.firing"
EXPORT_TRAILER = "Export-As-Of"        # the git trailer that marks the warehouse's commit of a new export
# Services a laptop server does not need: cleanup of cancelled runs, database vacuum, worker health
# (the foreman), marking late runs, paused-run expiry, lease repossession and cleanup reconciliation.
SERVICES_OFF = ("CANCELLATION_CLEANUP", "DB_VACUUM", "FOREMAN", "LATE_RUNS", "PAUSE_EXPIRATIONS",
                "REPOSSESSOR", "CLEANUP_RECONCILER")


# ---- the server, the runner and the webhook adapter -------------------------------------------------------
def server_settings(home: str | Path) -> dict[str, str]:
    """Environment of a lean local Prefect server whose home and SQLite database are in ``home``.

    The scheduler looks for new schedules every second instead of every 5 s (60 s for the rest), so a
    schedule made in a cell fires within seconds; block types are not registered (nothing here uses
    blocks: about 5 s of a fresh start).
    """
    home = Path(home).resolve()
    return {"PREFECT_HOME": str(home), "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_API_BLOCKS_REGISTER_ON_START": "false", "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
            **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in SERVICES_OFF}}


def database_template() -> Path:
    """Where an empty, migrated Prefect database is kept between runs (one per Prefect version).

    A fresh database runs Prefect's 100-odd schema migrations, several seconds of one core; a copy of an
    empty migrated one starts in a fraction of that. ``MLOPS_LAB_CACHE`` overrides the folder.
    """
    folder = Path(os.environ.get("MLOPS_LAB_CACHE", Path.home() / ".cache" / "mlops_lab"))
    return folder / f"prefect-{prefect.__version__}-empty.db"


def _keep_template(database: Path) -> None:
    """Keep a consistent copy of the just-migrated, still empty ``database`` (SQLite's online backup)."""
    template = database_template()
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_suffix(".partial")
    with contextlib.closing(sqlite3.connect(database)) as source, contextlib.closing(sqlite3.connect(partial)) as copy:
        source.backup(copy)
    partial.replace(template)


def start_server(home: str | Path, *, use_template: bool = True) -> BackgroundServer:
    """``prefect server start`` on a free 127.0.0.1 port, its home and database in ``home``.

    Points this process at it (``PREFECT_API_URL``), so flows called here report to it. With
    ``use_template``, an empty migrated database is copied in when one is cached (:func:`database_template`),
    and kept after a fresh start.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = server_settings(home)
    database = home / "prefect.db"
    fresh = not database.exists()
    if fresh and use_template and database_template().exists():
        shutil.copyfile(database_template(), database)
    migrated_here = fresh and not database.exists()
    started = time.perf_counter()
    server = BackgroundServer([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", "{port}"], name="prefect-server", health_path="/api/health",
                              env=settings, log_path=home / "server.log", startup_timeout=120).start()
    server.start_seconds = time.perf_counter() - started
    server.migrated = migrated_here                 # False: the database was a copy of the template
    if migrated_here and use_template:
        _keep_template(database)
    use_server(server.url + "/api", home)
    return server


def use_server(api_url: str, home: str | Path | None = None) -> None:
    """Point this process's Prefect client at ``api_url`` (environment, then Prefect's settings).

    Flow-run heartbeats are turned off here: they exist so that an automation can mark a run whose
    process died as Crashed, and here the runs live in this process; each flow run would otherwise wait
    up to a second at its end for the heartbeat thread.
    """
    import prefect.context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    os.environ["PREFECT_API_URL"] = api_url
    if home is not None:
        os.environ["PREFECT_HOME"] = str(Path(home).resolve())
    prefect.context.refresh_global_settings_context()   # read the environment again
    root = prefect.context.GLOBAL_SETTINGS_CONTEXT
    prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.SettingsContext(
        profile=root.profile, settings=root.settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
    for name in ("prefect.flow_runs", "prefect.task_runs"):   # run logs go to the server, not the notebook
        logging.getLogger(name).propagate = False


class LocalRunner:
    """Serve the Level 1 deployment from this Python process, and listen for Alertmanager webhooks.

    :meth:`start` registers the deployment (``level1_pipeline`` for ``config``, with the new-data and alarm
    triggers) with the server, then two daemon threads: one asks Prefect every ``poll_seconds`` for the
    deployment's runs that are due (a schedule's tick, or a run an automation created on an event), claims
    each (Pending) and runs it here with Prefect's own engine (``run_flow``), one at a time; the other is the
    webhook adapter. Prefect's ``Runner`` (``flow.serve()``) does the same from a process of its own, but
    starts every run in a fresh Python process that imports pandas, scikit-learn, pandera, MLflow and DVC
    again: on Binder's single core that costs more than the run. Measured on one core (2026-11, Prefect
    3.9.1): a runner took about 5 s from picking a run up to starting the flow and about 28 s for a whole
    month's run, against about 6 s for the same run here. :meth:`stop` ends both threads.
    """

    def __init__(self, config: str | Path, *, poll_seconds: float = 0.5):
        self.config, self.poll_seconds = str(Path(config).resolve()), poll_seconds
        self.deployment_id = None
        self.webhook = ThreadingHTTPServer(("127.0.0.1", free_port()), _AlertmanagerWebhook)
        self.webhook_url = f"http://127.0.0.1:{self.webhook.server_address[1]}"
        self.served: list[str] = []                # ids of the runs this runner ran, in order
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "LocalRunner":
        self.deployment_id = deployment(self.config).apply(_sync=True)   # sync even under Jupyter's loop
        self._threads = [threading.Thread(target=self._serve_runs, name="level1-runner", daemon=True),
                         threading.Thread(target=self.webhook.serve_forever, name="webhook-adapter", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def _serve_runs(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import Abort
        from prefect.flow_engine import run_flow
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state_sync

        with get_client(sync_client=True) as client:
            while not self._stop.is_set():
                try:
                    due = client.get_scheduled_flow_runs_for_deployments(
                        [self.deployment_id], scheduled_before=datetime.now(timezone.utc))
                except Exception as error:          # the server is busy or restarting: ask again later
                    logging.getLogger(__name__).warning("runner: could not poll the server: %s", error)
                    due = []
                for run in sorted(due, key=lambda r: r.expected_start_time):
                    try:                            # claim it, as a runner does: Scheduled -> Pending
                        claimed = propose_state_sync(client, Pending(), flow_run_id=run.id).is_pending()
                    except Abort:
                        claimed = False
                    if claimed and not self._stop.is_set():
                        self.served.append(str(run.id))
                        run_flow(level1_pipeline, flow_run=client.read_flow_run(run.id), return_type="state")
                self._stop.wait(self.poll_seconds)

    def stop(self, timeout: float = 120) -> None:
        """Stop taking runs (a run under way finishes first) and close the webhook adapter."""
        self._stop.set()
        if self._threads:                           # shutdown() waits for serve_forever, so only if it ran
            self.webhook.shutdown()
        self.webhook.server_close()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)


def deployment(config: str | Path):
    """The Level 1 deployment: ``level1_pipeline`` for ``config``, with the new-data and alarm triggers.

    The schedule is added when the chapter needs it (:func:`add_schedule`), so it fires then.
    """
    return level1_pipeline.to_deployment(
        DEPLOYMENT_NAME, parameters={"config": str(Path(config).resolve())}, _sync=True,
        description="Google's Level 1: extraction, data validation, preparation, training, evaluation, "
                    "model validation, registration",
        triggers=[
            DeploymentEventTrigger(name="new data", expect={NEW_DATA_EVENT},
                                   match={"prefect.resource.id": "dvc.repo.*"},
                                   parameters={"trigger": "new data", "as_of": "{{ event.payload.as_of }}",
                                               "data_commit": "{{ event.payload.commit }}"}),
            DeploymentEventTrigger(name="alarm", expect={ALARM_EVENT},
                                   match={"prefect.resource.id": "alertmanager.alert.*"},
                                   parameters={"trigger": "alarm: {{ event.payload.alertname }}",
                                               "as_of": "{{ event.payload.as_of }}"}),
        ])


def post_event(api_url: str, event: str, resource_id: str, payload: dict, labels: dict | None = None) -> str:
    """Post one event to Prefect's events API (``POST /events``) with the standard library; its id.

    ``labels`` are extra labels of the event's resource, which a trigger's ``match`` can select on.
    """
    event_id = str(uuid.uuid4())
    body = [{"id": event_id, "occurred": datetime.now(timezone.utc).isoformat(), "event": event,
             "resource": {"prefect.resource.id": resource_id, **(labels or {})}, "payload": payload}]
    request = urllib.request.Request(api_url.rstrip("/") + "/events", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status >= 300:
            raise RuntimeError(f"Prefect refused the event: HTTP {response.status}")
    return event_id


class _AlertmanagerWebhook(BaseHTTPRequestHandler):
    """``POST /hooks/alertmanager`` with Alertmanager's webhook payload (version 4): one Prefect event per
    firing alert, ``alertmanager.alert.firing`` about resource ``alertmanager.alert.<alertname>``, whose
    labels are the alert's (``alertmanager.severity``, ...)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        if self.path != "/hooks/alertmanager":
            return self._reply(404, {"error": f"no webhook at {self.path}; POST /hooks/alertmanager"})
        try:
            message = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            firing = [a for a in message["alerts"] if a.get("status", message.get("status")) == "firing"]
            events = [post_event(os.environ["PREFECT_API_URL"], ALARM_EVENT,
                                 f"alertmanager.alert.{alert['labels']['alertname']}",
                                 {"alertname": alert["labels"]["alertname"], "receiver": message.get("receiver"),
                                  "as_of": alert.get("annotations", {}).get("as_of"),
                                  "summary": alert.get("annotations", {}).get("summary"),
                                  "startsAt": alert.get("startsAt")},
                                 {f"alertmanager.{key}": str(value) for key, value in alert["labels"].items()})
                      for alert in firing]
        except (KeyError, TypeError, ValueError) as error:
            return self._reply(400, {"error": f"not an Alertmanager webhook payload: {error!r}"})
        self._reply(202, {"events": events})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # no access log on stderr
        pass


def alertmanager_payload(alertname: str, *, as_of: str, summary: str, receiver: str = "retrain") -> dict:
    """The JSON Alertmanager POSTs to a webhook receiver for one firing alert (payload version 4)."""
    labels = {"alertname": alertname, "severity": "page", "model": "credit"}
    alert = {"status": "firing", "labels": labels, "annotations": {"summary": summary, "as_of": as_of},
             "startsAt": datetime.now(timezone.utc).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": uuid.uuid4().hex[:16]}
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{alertname}"}}', "truncatedAlerts": 0,
            "status": "firing", "receiver": receiver, "groupLabels": {"alertname": alertname},
            "commonLabels": labels, "commonAnnotations": alert["annotations"], "externalURL": "", "alerts": [alert]}


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


# ---- the schedule and the book's calendar ----------------------------------------------------------------
def book_date(calendar: dict, when: datetime) -> str:
    """The book's date of a schedule tick: ``calendar["first"]`` plus one month per ``seconds_per_month``
    of real time since ``calendar["start"]`` (the first tick)."""
    start = datetime.fromisoformat(calendar["start"])
    months = round((when - start).total_seconds() / calendar["seconds_per_month"])
    return str((pd.Timestamp(calendar["first"]) + pd.DateOffset(months=months)).date())


def add_schedule(first_month: str, *, count: int, seconds_per_month: float, lead_seconds: float = 2.0):
    """Give the deployment a schedule of ``count`` ticks ``seconds_per_month`` apart, the first in
    ``lead_seconds`` (less the fraction of a second the rule drops); tick k runs the pipeline as of
    ``first_month`` + k months. Returns its schedule.

    The server's scheduler service creates runs only for ticks still ahead of it when its loop reaches the
    schedule, and a server busy recording the previous runs' events can get there after the first tick. So
    the runs are created at once, from the schedule, by the server's own ``POST /deployments/{id}/schedule``
    (what the service calls; idempotent with it: each run's key is the schedule and the tick), and the
    runner starts each when it is due. That call creates a run for every tick from ``start_time`` on, even
    one already past (Prefect's backfill), so this is not a race: a lead shorter than the calls only starts
    the first run late. The calls took 0.36 s on an idle core and up to 1.6 s on a core shared with a test
    run; 2 s keeps the first run on time without leaving the chapter idle for long.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import RRuleSchedule

    start = (datetime.now(timezone.utc) + timedelta(seconds=lead_seconds)).replace(microsecond=0)
    rule = (f"DTSTART:{start:%Y%m%dT%H%M%SZ}\n"
            f"RRULE:FREQ=SECONDLY;INTERVAL={int(seconds_per_month)};COUNT={int(count)}")
    calendar = {"first": str(pd.Timestamp(first_month).date()), "start": start.isoformat(),
                "seconds_per_month": int(seconds_per_month)}
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(DEPLOYMENT)
        schedule = client.create_deployment_schedules(
            found.id, [(RRuleSchedule(rrule=rule, timezone="UTC"), True)],
            parameters={"trigger": "schedule", "calendar": calendar}, slug="monthly")[0]
        client.request("POST", "/deployments/{id}/schedule", path_params={"id": found.id},
                       json={"start_time": start.isoformat()}).raise_for_status()
        return schedule


# ---- waiting for runs --------------------------------------------------------------------------------------
def flow_runs(since: datetime | None = None) -> list:
    """Runs of the Level 1 flow created after ``since`` (all if None), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200)
    return [r for r in runs if since is None or r.created >= since]


def task_table(flow_run_id) -> pd.DataFrame:
    """The task runs of one flow run, in the order they started: state, attempts and seconds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    rows = [{"task": re.sub(r"-[0-9a-f]{3}$", "", run.name),       # "extract-7f8": Prefect's run name
             "state": run.state_name, "attempts": run.run_count, "seconds": run.total_run_time.total_seconds(),
             "started": run.start_time} for run in runs]
    return pd.DataFrame(rows).sort_values("started", na_position="last").drop(columns="started").reset_index(drop=True)


def wait_for_runs(since: datetime, count: int = 1, timeout: float = 120) -> list:
    """Block until ``count`` runs of the flow created after ``since`` are finished; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = flow_runs(since)
        if len(runs) >= count and all(r.state is not None and r.state.is_final() for r in runs[:count]):
            return runs[:count]
        time.sleep(0.5)
    raise TimeoutError(f"{count} run(s) of {FLOW_NAME} created after {since:%H:%M:%S} did not finish in "
                       f"{timeout:.0f} s; found {[(r.name, r.state_name) for r in flow_runs(since)]}")


# ---- the pipeline's configuration, and the warehouse's side -------------------------------------------------
@dataclass
class Level1Config:
    """Everything a run of the pipeline needs, as a small JSON file any process can read."""

    project: str
    model_name: str
    experiment: str
    seed: int = 2024
    rows_per_month: int = 2000
    drift: dict = field(default_factory=dict)
    # The alias a passed gate moves: "champion" at Level 1; "challenger" at Level 2, where a canary and the
    # serving side move champion (chapter 13).
    release_alias: str = "champion"

    def stream(self) -> CreditStream:
        return CreditStream(seed=self.seed, rows_per_month=self.rows_per_month, drift=Drift(**self.drift))

    def save(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Level1Config":
        return cls(**json.loads(Path(path).read_text()))


def create_project(config: Level1Config, *, as_of, params: dict | None = None) -> Path:
    """A git + DVC repository with the Level 1 pipeline and no data yet (the first run extracts it)."""
    repo = dvc_project.init_repo(config.project)
    dvc_project.write_level1_pipeline(repo, {**(params or {}), "prepare": {
        **(params or {}).get("prepare", {}), "as_of": dvc_project._iso(as_of)}})
    dvc_project.commit(repo, "Level 1 pipeline: validate_data, prepare, featurize, train, evaluate, validate_model")
    return repo


NEW_DATA_HOOK = '''\
#!{python}
"""post-commit: when the warehouse commits a new export (a commit with an {trailer} trailer that changes
data/raw.dvc), tell Prefect: post a {event} event to its events API. Standard library only: a hook must
be fast, and it must never block a commit (errors are printed, not raised)."""
import json, subprocess, urllib.request, uuid
from datetime import datetime, timezone

def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

as_of = git("log", "-1", "--format=%(trailers:key={trailer},valueonly)")
if as_of and "data/raw.dvc" in git("diff-tree", "--root", "--no-commit-id", "--name-only", "-r", "HEAD").split():
    md5 = [line.split()[-1] for line in open("data/raw.dvc") if "md5:" in line][0]
    event = {{"id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(), "event": "{event}",
             "resource": {{"prefect.resource.id": "dvc.repo.{name}"}},
             "payload": {{"as_of": as_of, "commit": git("rev-parse", "HEAD"), "md5": md5}}}}
    request = urllib.request.Request("{api}/events", data=json.dumps([event]).encode(),
                                     headers={{"Content-Type": "application/json"}}, method="POST")
    try:
        urllib.request.urlopen(request, timeout=5)
        print(f"post-commit: told Prefect about the export as of {{as_of}} ({{md5[:8]}})")
    except OSError as error:
        print(f"post-commit: could not reach Prefect ({{error}}); run the pipeline by hand")
'''


def install_new_data_hook(repo: str | Path, api_url: str | None = None) -> Path:
    """Write the repository's ``post-commit`` hook that posts a new-data event for each new export."""
    repo = Path(repo).resolve()
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text(NEW_DATA_HOOK.format(python=sys.executable, trailer=EXPORT_TRAILER, event=NEW_DATA_EVENT,
                                         name=repo.name, api=(api_url or os.environ["PREFECT_API_URL"]).rstrip("/")))
    hook.chmod(0o755)
    return hook


def export_window(repo: Path, as_of) -> range:
    """The months an export as of ``as_of`` holds: those already in data/raw, plus the months the clock
    reaches (:func:`~mlops_lab.dvc_project.default_months` of the project's label and window)."""
    params = dvc_project.read_params(repo)["prepare"]
    window = dvc_project.default_months(as_of, params["label"], params.get("window_months", 3))
    existing = [(pd.Period(p.stem, freq="M") - pd.Period("2024-01", freq="M")).n
                for p in (repo / "data" / "raw").glob("*.csv")]
    return range(min(existing + [window.start]), window.stop)


def publish_export(config: Level1Config, *, as_of, fault: str | None = None, seed: int = 0) -> dict:
    """The warehouse's side: export every month as of ``as_of`` into data/raw, ``dvc add``, and commit with
    an ``Export-As-Of`` trailer (the new-data hook fires). ``fault`` (one of :data:`mlops_lab.contract.FAULTS`)
    spoils the newest whole month, as a broken upstream job would. Returns what was committed."""
    from .contract import faulty_export

    repo, stream, iso = Path(config.project), config.stream(), dvc_project._iso(as_of)
    months = export_window(repo, iso)
    dvc_project.write_months(repo, stream, months, as_of=iso)
    newest_whole = months[-2]
    if fault is not None:
        faulty_export(stream, newest_whole, fault, as_of=iso, seed=seed).to_csv(
            repo / "data" / "raw" / f"{month_label(newest_whole)}.csv", index=False)
    track_data(repo)                                   # dvc add data/raw
    dvc_project._run("git add data/raw.dvc", repo)
    dvc_project._run(["git", "commit", "-q", "-m", f"Warehouse export as of {iso}"
                      + (f" ({month_label(newest_whole)}: {fault})" if fault else ""),
                      "-m", f"{EXPORT_TRAILER}: {iso}"], repo)
    return {"as_of": iso, "commit": dvc_project._run("git rev-parse HEAD", repo).strip(),
            "md5": dvc_project.data_hash(repo), "newest_month": month_label(newest_whole), "fault": fault}


# ---- the pipeline's tasks -----------------------------------------------------------------------------------
class DataRefused(RuntimeError):
    """The data gate refused the batch: ``dvc repro`` would stop at validate_data, and so does the flow."""


@contextlib.contextmanager
def _dvc(repo: Path):
    """DVC's Python API on ``repo`` (what the ``dvc`` command calls), its INFO chatter silenced."""
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)
    with contextlib.chdir(repo), Repo(str(repo)) as dvc_repo:
        yield dvc_repo


@task(name="extract", retries=2, retry_delay_seconds=1)
def extract(config: Level1Config, as_of: str, data_commit: str | None = None, outages: int = 0) -> dict:
    """Make data/raw the warehouse's export as of ``as_of`` (the committed one if ``data_commit``), and set
    ``prepare.as_of``. ``outages``: the first attempts time out, as a warehouse under load does."""
    from prefect.runtime import task_run

    if task_run.run_count <= outages:
        raise TimeoutError(f"the warehouse export timed out (attempt {task_run.run_count}; injected)")
    repo = Path(config.project)
    if data_commit:   # the warehouse committed this export already: use it as it is
        head = dvc_project._run("git rev-parse HEAD", repo).strip()
        if not head.startswith(data_commit):
            raise RuntimeError(f"the new-data event names commit {data_commit[:8]}, but HEAD is {head[:8]}")
        params = dvc_project.read_params(repo)
        params["prepare"]["as_of"] = as_of
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    else:
        dvc_project.advance_clock(repo, config.stream(), as_of=as_of)
    return {"as_of": as_of, "files": len(list((repo / "data" / "raw").glob("*.csv"))), "attempts": task_run.run_count}


@task(name="export champion")
def export_champion(config: Level1Config) -> str | None:
    """Copy the registry's ``champion`` into the project's champion/ folder (None: no champion yet)."""
    import mlflow

    from .registry import AliasNotFound, get_version

    try:
        version = get_version(config.model_name, "champion")
    except AliasNotFound:
        dvc_project.export_champion(config.project, None)
        return None
    model = mlflow.sklearn.load_model(f"models:/{config.model_name}/{version.version}")
    dvc_project.export_champion(config.project, model, version.version)
    return str(version.version)


def track_data(repo: Path) -> str:
    """``dvc repro``'s first step: hash data/raw and record it in data/raw.dvc (``dvc add`` the first
    time); returns the data's md5."""
    with _dvc(repo) as dvc_repo:
        if (repo / "data" / "raw.dvc").exists():
            dvc_repo.commit("data/raw.dvc", force=True)
        else:
            dvc_repo.add("data/raw")
    return dvc_project.data_hash(repo)


def stage_command(repo: Path, stage: str) -> list[str]:
    return shlex.split(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]["cmd"])


@task(name="dvc stage", task_run_name="{stage}")
def run_stage(project: str, stage: str) -> str:
    """``dvc repro``'s step for one stage: skip it if DVC says it is up to date; otherwise remove its
    outputs and run its ``python <script>`` command in this process. :func:`record_stages` records them."""
    repo = Path(project)
    with _dvc(repo) as dvc_repo:
        if not dvc_repo.status(targets=[stage]):
            return "up to date"
        outs = [str(out) for out in dvc_repo.stage.collect(stage)[0].outs]
    command = stage_command(repo, stage)
    if command[:1] != ["python"] or len(command) != 2:
        raise ValueError(f"stage {stage}: only `python <script>` commands run in process, got {command}")
    for out in outs:                             # as dvc repro does: an output must come from this run
        path = repo / out
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    output = io.StringIO()
    with contextlib.chdir(repo), contextlib.redirect_stdout(output):
        try:
            runpy.run_path(command[1], run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (None, 0):
                message = stop.code if isinstance(stop.code, str) else f"{stage} exited with status {stop.code}"
                raise (DataRefused if stage == "validate_data" else RuntimeError)(message) from None
    return output.getvalue().strip()


@task(name="dvc commit")
def record_stages(project: str) -> None:
    """Record what the stages produced in dvc.lock and the DVC cache (``dvc commit``), once every stage
    has succeeded: the lock file ``dvc repro`` would have written. A run that stops records nothing."""
    with _dvc(Path(project)) as dvc_repo:
        dvc_repo.commit(None, force=True)


@task(name="store")
def store(project: str, message: str) -> str:
    """Commit the run (dvc.lock, metrics, reports) and push its artifacts to the DVC remote; the commit."""
    repo = Path(project)
    with _dvc(repo) as dvc_repo:
        dvc_repo.push()
    dvc_project.commit(repo, message)
    return dvc_project._run("git rev-parse HEAD", repo).strip()


@task(name="register")
def register(config: Level1Config, gate: dict, tags: dict, fail_alias_move: bool = False):
    """Log the candidate into the active MLflow run and register it, with ``config.release_alias`` (the new
    champion at Level 1), only if the model gate passed (``fail_alias_move``: the registry fails between the version and the alias, to show that
    :func:`~mlops_lab.gates.register_if_passed` then deletes the version)."""
    import joblib

    from .gates import GateVerdict, register_if_passed
    from .registry import log_credit_model

    verdict = GateVerdict.from_dict({k: v for k, v in gate.items() if k in GateVerdict.__dataclass_fields__})
    if not verdict.passed:
        return None
    repo = Path(config.project)
    model = joblib.load(repo / "models" / "model.joblib")
    example = pd.read_csv(repo / "data" / "prepared" / "test.csv", nrows=5)
    with contextlib.redirect_stderr(io.StringIO()):          # MLflow's "Created version ..." lines
        logged = log_credit_model(model, example)
        client = _AliasMoveFails() if fail_alias_move else None
        version = register_if_passed(verdict, logged.model_uri, config.model_name, client=client, tags=tags,
                                     alias=config.release_alias)
    return str(version.version)


class _AliasMoveFails:
    """A registry client whose alias move fails, as when the tracking server goes away between two calls."""

    def __init__(self):
        from mlflow import MlflowClient

        self._client = MlflowClient()

    def set_registered_model_alias(self, *args, **kwargs):
        raise ConnectionError("the tracking server went away before the champion alias moved (injected)")

    def __getattr__(self, name):
        return getattr(self._client, name)


def _latest_label(repo: Path) -> str:
    """The latest date any label in the prepared sets became known (train, validation, test)."""
    dates = [pd.read_csv(repo / "data" / "prepared" / f"{name}.csv", usecols=["label_known"])["label_known"].max()
             for name in ("train", "validation", "test")]
    return max(dates)


# ---- the flow ----------------------------------------------------------------------------------------------
@flow(name=FLOW_NAME)
def level1_pipeline(config: str, as_of: str | None = None, trigger: str = "on demand",
                    data_commit: str | None = None, calendar: dict | None = None, params: dict | None = None,
                    inject: dict | None = None) -> dict:
    """One run of the Level 1 pipeline on the book's clock; returns what it decided and why.

    ``as_of``: the run's date (a schedule's tick gives it through ``calendar``, see :func:`book_date`);
    ``params``: changes to params.yaml for this run (committed with it); ``inject``: failures to show
    (``{"extract_outages": 1}``, ``{"fail_alias_move": True}``).
    """
    import mlflow

    from prefect.runtime import flow_run

    cfg, inject = Level1Config.load(config), inject or {}
    if as_of is None and calendar is not None:
        as_of = book_date(calendar, flow_run.scheduled_start_time)
    as_of = dvc_project._iso(as_of)
    repo = Path(cfg.project)
    mlflow.set_experiment(cfg.experiment)
    record = {"trigger": trigger, "as_of": as_of, "prefect_flow_run": str(flow_run.id),
              "git_commit": dvc_project._run("git rev-parse HEAD", repo).strip()}   # until the run commits
    with mlflow.start_run(run_name=f"level1 {as_of} ({trigger})"):
        mlflow.set_tags(record)
        try:
            record["extract_attempts"] = extract(cfg, as_of, data_commit, inject.get("extract_outages", 0))["attempts"]
            if params:
                current = dvc_project.read_params(repo)
                for section, values in params.items():
                    current[section].update(values)
                (repo / "params.yaml").write_text(yaml.safe_dump(current, sort_keys=False))
            record["champion_before"] = record["champion_after"] = export_champion(cfg)
            track_data(repo)
            record["data_md5"] = dvc_project.data_hash(repo)
            record["stages"] = {stage: run_stage(cfg.project, stage) for stage in dvc_project.LEVEL1_STAGES}
            record_stages(cfg.project)
        except DataRefused as refusal:
            report = dvc_project.read_report(repo, "data")
            record |= {"data_gate": "refused", "decision": "refused: the data contract failed",
                       "data_problems": sum(len(r["problems"]) for r in report["failed"]),
                       "refused_files": [r["name"] for r in report["failed"]], "reason": str(refusal)}
            mlflow.log_artifact(str(repo / "reports" / "data_validation.md"))
            _log_record(record, status="FAILED")
            raise
        except BaseException as error:
            _log_record(record | {"decision": f"failed: {type(error).__name__}", "reason": str(error)}, "FAILED")
            raise
        gate = dvc_project.read_report(repo, "gate")
        metrics = dvc_project.read_metrics(repo)
        mlflow.log_metrics(dvc_project.numeric_metrics(metrics) | {
            "gate_auc_gain": gate["diff"], "gate_lower_bound": gate["lower_bound"]})
        mlflow.log_artifact(str(repo / "reports" / "gate.md"))
        record |= {"data_gate": "passed", "model_gate": "passed" if gate["passed"] else "refused",
                   "gate_reason": gate["reason"], "train_months": metrics["train_months"],
                   "test_month": metrics["test_month"], "latest_label_known": _latest_label(repo)}
        try:
            record["git_commit"] = store(cfg.project, f"Level 1 run as of {as_of} ({trigger}): model gate "
                                                      f"{record['model_gate']}")
            version = register(cfg, gate,
                               tags={"level1.as_of": as_of, "level1.trigger": trigger,
                                     "level1.git_commit": record["git_commit"], "level1.data_md5": record["data_md5"]},
                               fail_alias_move=inject.get("fail_alias_move", False))
        except BaseException as error:
            _log_record(record | {"decision": f"failed: {type(error).__name__}", "reason": str(error)}, "FAILED")
            raise
        released = version and cfg.release_alias == "champion"
        record["champion_after"] = version if released else record["champion_before"]
        record["released"] = version
        record["decision"] = (f"kept the champion ({record['champion_before'] or 'none'}): the model gate refused"
                              if not version else f"promoted: version {version} is the champion" if released else
                              f"released: version {version} is the {cfg.release_alias}, for the canary")
        _log_record(record, status="FINISHED")
    return record


def _log_record(record: dict, status: str) -> None:
    """Write the run's record into the active MLflow run as tags (text, searchable), and end it."""
    import mlflow

    mlflow.set_tags({key: json.dumps(value) if isinstance(value, (dict, list)) else str(value)
                     for key, value in record.items() if value is not None})
    mlflow.end_run(status=status)


def runs_table(experiment: str) -> pd.DataFrame:
    """Every pipeline run recorded in MLflow, oldest first: trigger, dates, hashes, gates and decision."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time ASC"])
    columns = {"tags.as_of": "as_of", "tags.trigger": "trigger", "status": "status", "tags.data_md5": "data_md5",
               "tags.git_commit": "git_commit", "tags.data_gate": "data_gate", "tags.model_gate": "model_gate",
               "tags.decision": "decision", "tags.champion_after": "champion", "tags.released": "released",
               "tags.train_months": "train_months",
               "tags.test_month": "holdout_month", "tags.latest_label_known": "latest_label_known",
               "metrics.gate_auc_gain": "auc_gain", "metrics.gate_lower_bound": "lower_bound",
               "tags.prefect_flow_run": "prefect_flow_run", "run_id": "mlflow_run"}
    return runs.reindex(columns=list(columns)).rename(columns=columns)
