"""Chapter 07's Level 1 pipeline: the DVC project's two gates, the Prefect flow, its triggers, and cleanup.

The fast tests check the pieces that talk HTTP (the Alertmanager adapter, the git hook) against a fake events
API, and that the deployment's triggers match the events those pieces send. The slow ones run the real thing:
``dvc repro`` of the Level 1 project, and one Prefect server (module-scoped) with the flow run on demand,
by a schedule and by an alarm.
"""
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
import yaml

from mlops_lab import CommandFailed, CreditStream, sh
from mlops_lab import dvc_project as dp
from mlops_lab import orchestration as orc
from mlops_lab.exercises.ch07 import trigger_covers
from mlops_lab.servers import free_port

ROWS = 600                      # a month for `dvc repro`: enough rows for every stage, few enough to be quick
GATED = dict(seed=7, rows_per_month=1000)   # a world whose first model beats the incumbent policy (lower bound
                                            # +0.04 on 2025-05-01), so the registration tests register
AS_OF, LATER = "2025-05-01", "2025-06-01"


# ---- a fake Prefect events API, for the pieces that post events ---------------------------------------------
class _Events(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.extend(body if self.path.endswith("/events") else [])
        self.send_response(204 if self.path.endswith("/events") else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def events_api(monkeypatch):
    _Events.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Events)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    yield url, _Events.received
    server.shutdown()
    server.server_close()


def post(url, body) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# ---- fast: settings, the calendar, the adapter, the hook, the triggers ---------------------------------------
def test_server_settings_turn_off_what_a_laptop_does_not_need_and_keep_scheduler_and_triggers(tmp_path):
    settings = orc.server_settings(tmp_path / "home")
    assert settings["PREFECT_HOME"] == str((tmp_path / "home").resolve())
    assert settings["PREFECT_API_DATABASE_CONNECTION_URL"].endswith(f"{tmp_path / 'home' / 'prefect.db'}")
    assert settings["PREFECT_SERVER_UI_ENABLED"] == "false"
    for service in orc.SERVICES_OFF:
        assert settings[f"PREFECT_SERVER_SERVICES_{service}_ENABLED"] == "false"
    for kept in ("SCHEDULER", "TRIGGERS", "EVENT_PERSISTER", "TASK_RUN_RECORDER"):
        assert f"PREFECT_SERVER_SERVICES_{kept}_ENABLED" not in settings
    assert float(settings["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"]) <= 1


def test_book_date_maps_each_tick_to_one_month():
    start = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    calendar = {"first": "2025-06-01", "start": start.isoformat(), "seconds_per_month": 5}
    ticks = [start + timedelta(seconds=s) for s in (0, 5, 10.3, 14.8)]
    assert [orc.book_date(calendar, t) for t in ticks] == ["2025-06-01", "2025-07-01", "2025-08-01", "2025-09-01"]


def test_the_alertmanager_adapter_posts_one_event_per_firing_alert(events_api):
    _, received = events_api
    adapter = ThreadingHTTPServer(("127.0.0.1", free_port()), orc._AlertmanagerWebhook)
    threading.Thread(target=adapter.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{adapter.server_address[1]}"
    try:
        payload = orc.alertmanager_payload("CreditModelAUCLow", as_of="2025-09-01", summary="AUC low")
        payload["alerts"].append({**payload["alerts"][0], "status": "resolved",
                                  "labels": {"alertname": "CreditInputDrift"}})
        status, answer = post(url + "/hooks/alertmanager", payload)
        assert status == 202 and len(answer["events"]) == 1
        (event,) = received
        assert event["event"] == orc.ALARM_EVENT and event["id"] == answer["events"][0]
        assert event["resource"]["prefect.resource.id"] == "alertmanager.alert.CreditModelAUCLow"
        assert event["resource"]["alertmanager.severity"] == "page"
        assert event["payload"]["as_of"] == "2025-09-01" and event["payload"]["alertname"] == "CreditModelAUCLow"
        assert post(url + "/hooks/alertmanager", {"alerts": [{"status": "firing"}]})[0] == 400
        assert post(url + "/hooks/other", payload)[0] == 404
        assert len(received) == 1, "a refused payload posts nothing"
    finally:
        adapter.shutdown()
        adapter.server_close()


def test_a_real_alertmanager_routes_an_alert_to_the_adapter(events_api, tmp_path):
    """The path chapter 07 runs: an alert sent to Alertmanager's API, grouped and routed to the webhook
    receiver that is the runner's adapter, which posts the Prefect event the alarm trigger reacts to."""
    from conftest import skip_or_fail
    from mlops_lab.prometheus import Alertmanager, MissingTool

    _, received = events_api
    adapter = ThreadingHTTPServer(("127.0.0.1", free_port()), orc._AlertmanagerWebhook)
    threading.Thread(target=adapter.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{adapter.server_address[1]}/hooks/alertmanager"
    try:
        manager = Alertmanager(tmp_path / "am", webhook_urls={"retrain": hook})
    except MissingTool as error:
        skip_or_fail(str(error))
    try:
        with manager:
            manager.post_alert({"alertname": "CreditInputDrift", "severity": "page"},
                               {"as_of": "2025-09-01", "summary": "inputs drifted"})
            deadline = time.monotonic() + 15
            while not received and time.monotonic() < deadline:
                time.sleep(0.1)
        (event,) = received
        assert event["event"] == orc.ALARM_EVENT
        assert event["resource"]["prefect.resource.id"] == "alertmanager.alert.CreditInputDrift"
        assert event["resource"]["alertmanager.severity"] == "page"
        assert event["payload"]["as_of"] == "2025-09-01" and event["payload"]["receiver"] == "retrain"
    finally:
        adapter.shutdown()
        adapter.server_close()


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_the_new_data_hook_posts_an_event_for_each_export_and_nothing_else(events_api, tmp_path):
    url, received = events_api
    repo = tmp_path / "credit"
    (repo / "data").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    orc.install_new_data_hook(repo, url)

    def commit(md5, message, *trailer):
        (repo / "data" / "raw.dvc").write_text(f"outs:\n- md5: {md5}.dir\n  path: raw\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message, *trailer)
        return git(repo, "rev-parse", "HEAD")

    export = commit("a" * 32, "Warehouse export", "-m", f"{orc.EXPORT_TRAILER}: 2025-08-01")
    commit("b" * 32, "Pipeline run: dvc.lock and data/raw.dvc, no trailer")
    (repo / "notes.txt").write_text("not data")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "A trailer, but no new data", "-m", f"{orc.EXPORT_TRAILER}: 2025-09-01")
    assert [e["payload"] for e in received] == [{"as_of": "2025-08-01", "commit": export, "md5": "a" * 32 + ".dir"}]
    assert received[0]["event"] == orc.NEW_DATA_EVENT and received[0]["resource"]["prefect.resource.id"] == "dvc.repo.credit"


def test_the_deployment_triggers_match_the_events_the_hook_and_the_adapter_send(tmp_path):
    new_data, alarm = orc.deployment(tmp_path / "level1.json").triggers
    data_event = {"event": orc.NEW_DATA_EVENT, "resource": {"prefect.resource.id": "dvc.repo.credit"}}
    alarm_event = {"event": orc.ALARM_EVENT, "resource": {"prefect.resource.id": "alertmanager.alert.CreditModelAUCLow",
                                                          "alertmanager.severity": "page"}}
    assert trigger_covers(new_data, data_event) and not trigger_covers(new_data, alarm_event)
    assert trigger_covers(alarm, alarm_event) and not trigger_covers(alarm, data_event)
    assert not trigger_covers(alarm, {**alarm_event, "event": "alertmanager.alert.resolved"})
    assert new_data.parameters["as_of"] == "{{ event.payload.as_of }}"


# ---- the Level 1 DVC project under the real `dvc repro` ---------------------------------------------------------
@pytest.fixture(scope="module")
def level1_repo(tmp_path_factory):
    stream = CreditStream(seed=7, rows_per_month=ROWS)
    repo = dp.init_repo(tmp_path_factory.mktemp("level1") / "credit")
    dp.add_months(repo, stream, dp.default_months(AS_OF), as_of=AS_OF)
    dp.write_level1_pipeline(repo, {"prepare": {"as_of": AS_OF}})
    return repo, stream


def test_level1_dvc_yaml_puts_the_data_gate_first_and_the_model_gate_last(level1_repo):
    repo, _ = level1_repo
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(dp.LEVEL1_STAGES)
    assert dp.REPORTS["data"] in stages["prepare"]["deps"], "prepare waits for the data gate"
    assert {"models/model.joblib", dp.CHAMPION_DIR} <= set(stages["validate_model"]["deps"])
    assert "/champion" in (repo / ".gitignore").read_text().split()
    assert json.loads((repo / "champion" / "version.json").read_text()) == {"version": None}
    assert dp.read_params(repo)["validate_model"]["margin"] == 0.0


def test_dvc_repro_stops_at_a_bad_batch_and_runs_every_stage_on_good_data(level1_repo):
    from mlops_lab.contract import faulty_export

    repo, stream = level1_repo
    newest = dp.newest_month(AS_OF) - 1                   # the newest whole month: the batch just delivered
    path = repo / "data" / "raw" / f"{pd.Period('2024-01', 'M') + newest}.csv"
    good = path.read_bytes()
    faulty_export(stream, newest, "unknown category", as_of=AS_OF).to_csv(path, index=False)
    with pytest.raises(CommandFailed) as failure:
        sh("dvc repro", cwd=repo, echo=False)
    assert "validate_data: 1 of" in failure.value.output and "unknown category in purpose" in failure.value.output
    assert not (repo / "data" / "prepared").exists() and not (repo / "dvc.lock").exists(), "nothing downstream ran"
    report = dp.read_report(repo, "data")
    assert not report["ok"] and report["failed"][0]["name"] == path.stem
    path.write_bytes(good)
    output = sh("dvc repro", cwd=repo, echo=False)
    assert [s for s in dp.LEVEL1_STAGES if f"Running stage '{s}'" in output] == list(dp.LEVEL1_STAGES)
    gate = dp.read_report(repo, "gate")
    assert gate["champion"] == "incumbent policy" and gate["as_of"] == AS_OF
    assert gate["holdout_month"] == dp.read_metrics(repo)["test_month"]
    assert dp.data_hash(repo) == {d["path"]: d["md5"] for d in dp.read_lock(repo)["stages"]["validate_data"]["deps"]}["data/raw"]


# ---- the orchestrated pipeline, on one real Prefect server ----------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("level1-orchestrated")
    mp = pytest.MonkeyPatch()
    for name in ("PREFECT_API_URL", "PREFECT_HOME"):     # start_server points this process at its server
        mp.delenv(name, raising=False)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{workspace / 'mlflow.db'}")
    mlflow.create_experiment("level1-test", artifact_location=(workspace / "mlartifacts").as_uri())
    server = orc.start_server(workspace / "prefect")
    config = orc.Level1Config(project=str(workspace / "credit"), model_name="credit-test", experiment="level1-test",
                              **GATED)
    path = str(config.save(workspace / "level1.json"))
    orc.create_project(config, as_of=AS_OF)
    yield server, config, path
    server.stop()
    mp.undo()


def registry(config):
    client = mlflow.MlflowClient()
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{config.model_name}'"))
    models = client.search_registered_models(filter_string=f"name='{config.model_name}'")
    return versions, {a: str(v) for a, v in models[0].aliases.items()} if models else {}


def test_a_failed_registration_leaves_the_registry_as_it_was_and_a_retry_is_cheap(stack):
    server, config, path = stack
    with pytest.raises(ConnectionError, match="alias moved"):
        orc.level1_pipeline(path, as_of=AS_OF, inject={"extract_outages": 1, "fail_alias_move": True})
    run = orc.flow_runs()[-1]
    tasks = orc.task_table(run.id).set_index("task")
    assert run.state.is_failed() and tasks.loc["extract", "attempts"] == 2 and tasks.loc["register", "state"] == "Failed"
    assert registry(config) == ([], {}), "nothing half-registered"
    failed = orc.runs_table(config.experiment).iloc[-1]
    assert failed["status"] == "FAILED" and failed["decision"] == "failed: ConnectionError"
    record = orc.level1_pipeline(path, as_of=AS_OF)
    assert set(record["stages"].values()) == {"up to date"}, "DVC has nothing to recompute"
    versions, aliases = registry(config)
    assert len(versions) == 1 and aliases == {"champion": record["champion_after"]} and record["decision"].startswith("promoted")
    repo = config.project
    assert "up to date" in sh("dvc status", cwd=repo, echo=False)
    assert record["data_md5"] == {d["path"]: d["md5"] for d in dp.read_lock(repo)["stages"]["validate_data"]["deps"]}["data/raw"]
    assert record["git_commit"] == sh("git rev-parse HEAD", cwd=repo, echo=False).strip()
    assert pd.Timestamp(record["latest_label_known"]) <= pd.Timestamp(AS_OF)


def test_stages_run_in_process_give_what_dvc_repro_gives(stack):
    _, config, _ = stack
    repo = config.project
    before = {name: (Path(repo) / name).read_bytes() for name in ("metrics.json", dp.REPORTS["gate"])}
    sh("dvc repro --force --single-item evaluate validate_model", cwd=repo, echo=False)
    after = {name: (Path(repo) / name).read_bytes() for name in before}
    assert after == before, "the same stage run by `dvc repro` writes the same bytes"
    sh("git checkout -- dvc.lock", cwd=repo, echo=False)


def test_too_many_outages_fail_the_run_before_anything_changes(stack):
    _, config, path = stack
    lock = (Path(config.project) / "dvc.lock").read_text()
    with pytest.raises(TimeoutError, match="injected"):
        orc.level1_pipeline(path, as_of=AS_OF, inject={"extract_outages": 3})   # the task retries twice
    assert (Path(config.project) / "dvc.lock").read_text() == lock and len(registry(config)[0]) == 1


def test_a_bad_export_is_refused_by_the_data_gate_and_nothing_downstream_runs(stack):
    _, config, path = stack
    repo = Path(config.project)
    lock, before = (repo / "dvc.lock").read_text(), registry(config)
    export = orc.publish_export(config, as_of=LATER, fault="nulls")
    with pytest.raises(orc.DataRefused, match="missing values in income"):
        orc.level1_pipeline(path, as_of=LATER, trigger="new data", data_commit=export["commit"])
    tasks = orc.task_table(orc.flow_runs()[-1].id)
    assert tasks["task"].tolist() == ["extract", "export champion", "validate_data"]
    assert (repo / "dvc.lock").read_text() == lock and registry(config) == before
    refused = orc.runs_table(config.experiment).iloc[-1]
    assert refused["data_gate"] == "refused" and refused["data_md5"] == export["md5"] and refused["status"] == "FAILED"


def test_the_schedule_and_an_alarm_start_runs_on_the_book_calendar(stack):
    server, config, path = stack
    runner = orc.LocalRunner(path).start()
    try:
        since = datetime.now(timezone.utc)
        # No lead: the tick is already past when the server is asked for its runs (the rule drops the fraction
        # of a second), as it is when the calls outlast the lead on a busy core. The run must still be created
        # at once, and run.
        schedule = orc.add_schedule(LATER, count=1, seconds_per_month=5, lead_seconds=0)
        returned = datetime.now(timezone.utc)
        (created,) = orc.flow_runs(since)      # already there: a busy scheduler cannot miss it
        tick = datetime.fromisoformat(schedule.parameters["calendar"]["start"])
        assert created.expected_start_time == tick < returned and created.parameters["trigger"] == "schedule"
        (scheduled,) = orc.wait_for_runs(since, count=1, timeout=90)
        assert scheduled.id == created.id
        assert scheduled.state.is_completed() and scheduled.parameters["calendar"] == schedule.parameters["calendar"]
        record = orc.runs_table(config.experiment).iloc[-1]
        assert record["trigger"] == "schedule" and record["as_of"] == LATER and record["data_gate"] == "passed"
        since = datetime.now(timezone.utc)
        alert = orc.alertmanager_payload("CreditModelAUCLow", as_of="2025-07-01", summary="test")
        assert post(runner.webhook_url + "/hooks/alertmanager", alert)[0] == 202
        (alarmed,) = orc.wait_for_runs(since, count=1, timeout=90)
        record = orc.runs_table(config.experiment).iloc[-1]
        assert alarmed.state.is_completed() and record["trigger"] == "alarm: CreditModelAUCLow"
        assert record["as_of"] == "2025-07-01" and runner.served[-2:] == [str(scheduled.id), str(alarmed.id)]
        versions, aliases = registry(config)
        assert aliases["champion"] == record["champion"] and len(versions) == len(set(
            orc.runs_table(config.experiment)["champion"].dropna())), "a version only for each champion"
    finally:
        runner.stop()
    assert not runner.running


def test_stopping_the_server_leaves_no_process(stack):     # last: it stops the module's server
    server = stack[0]
    family = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    assert server.start_seconds > 0 and isinstance(server.migrated, bool)
    server.stop()
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
