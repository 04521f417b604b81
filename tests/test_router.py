"""The traffic router: the guardrail policy (pure), and reliability with real processes on 127.0.0.1.

Reliability tests (the issue's list): a backend killed mid-canary loses no client request beyond the retry
policy; malformed requests get a 4xx and the router keeps serving; concurrent clients see zero errors; a
blue/green switch under load fails no request; and no server process outlives its test (orphan check).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import temporary_tracking
from mlops_lab import CreditStream
from mlops_lab.loadgen import get_json, get_text, payloads, post, run_load, summarize
from mlops_lab.models import train
from mlops_lab.router import (Alarm, Deployment, PeriodStats, RolloutPlan, Router, router_command, rows_of,
                              simulate_rollout)
from mlops_lab.servers import BackgroundServer
from mlops_lab.serving import request_frame

TOKEN = f"router-test-{uuid.uuid4().hex[:8]}"  # in every test server's environment: the orphan check's tag


# ---- the policy, without HTTP ------------------------------------------------------------------------
def test_plans_have_the_documented_steps():
    assert RolloutPlan("all_at_once", final_bake_s=3).steps() == [(1.0, 3)]
    assert RolloutPlan("canary", canary_size=0.1, bake_s=5, final_bake_s=2).steps() == [(0.1, 5), (1.0, 2)]
    assert [w for w, _ in RolloutPlan("linear", step_size=0.25).steps()] == [0.25, 0.5, 0.75, 1.0]
    assert [w for w, _ in RolloutPlan("linear", step_size=0.3).steps()] == [0.3, 0.6, 0.9, 1.0]
    assert RolloutPlan("linear", step_size=0.5, bake_s=2, final_bake_s=1).duration_s() == 3
    for bad in ({"strategy": "yolo"}, {"canary_size": 0}, {"canary_size": 1.0}, {"bake_s": -1}):
        with pytest.raises(ValueError):
            RolloutPlan(**bad)


def test_period_stats_and_alarm_datapoints():
    stats = PeriodStats.from_samples([(0.001 * i, i % 10 == 0) for i in range(1, 101)])
    assert stats.requests == 100 and stats.errors == 10 and stats.error_rate == 0.1
    assert stats.p99_latency == pytest.approx(0.1)
    assert Alarm("error_rate", 0.05).datapoint(stats) == 0.1
    assert Alarm("p99_latency", 0.05).datapoint(stats) == pytest.approx(0.1)
    assert Alarm("error_rate", 0.05, min_requests=5).datapoint(PeriodStats(4, 4, 0.0)) is None  # missing data
    with pytest.raises(ValueError):
        Alarm("cpu", 1.0)
    with pytest.raises(ValueError):
        Alarm("error_rate", 0.1, evaluation_periods=2, datapoints_to_alarm=3)


def test_deployment_promotes_after_every_bake_when_healthy():
    d = Deployment(RolloutPlan("linear", step_size=0.5, bake_s=1, final_bake_s=1), (Alarm("error_rate", 0.05),))
    healthy = PeriodStats(20, 0, 0.01)
    weights = [d.tick(t, healthy) for t in (0.5, 1.0, 1.5, 2.0)]
    assert weights == [0.5, 1.0, 1.0, 1.0] and d.phase == "promoted"
    assert [e[1].split(":")[0] for e in d.events] == ["step 1", "step 2", "bake passed"]


def test_deployment_rolls_back_after_m_of_n_breaching_periods():
    alarm = Alarm("error_rate", 0.05, evaluation_periods=3, datapoints_to_alarm=2)
    d = Deployment(RolloutPlan("canary", canary_size=0.2, bake_s=100), (alarm,))
    assert d.tick(1, PeriodStats(20, 5, 0.01)) == 0.2      # one breaching period: not yet
    assert d.tick(2, PeriodStats(20, 0, 0.01)) == 0.2
    assert d.tick(3, PeriodStats(20, 0, 0.01)) == 0.2
    assert d.tick(4, PeriodStats(20, 5, 0.01)) == 0.2      # the first breach has left the 3-period window
    assert d.tick(5, PeriodStats(3, 3, 0.01)) == 0.2       # too few requests: missing data, not breaching
    assert d.tick(6, PeriodStats(20, 5, 0.01)) == 0.0      # second breach within the last 3: ALARM
    assert d.phase == "rolled_back" and "ALARM" in d.events[-1][1]
    assert d.tick(7, PeriodStats(20, 0, 0.01)) == 0.0      # stays rolled back


def test_simulation_runs_the_same_policy():
    plan = RolloutPlan("canary", canary_size=0.2, bake_s=5, final_bake_s=2)
    alarm = (Alarm("error_rate", 0.05),)
    bad = simulate_rollout(plan, alarm, green_error_rate=0.4, rps=100, period_s=0.5, seed=1)
    good = simulate_rollout(plan, alarm, green_error_rate=0.0, rps=100, period_s=0.5, seed=1)
    assert bad["outcome"] == "rolled_back" and 0 < bad["client_errors"] < 40 and bad["ended_s"] < 5
    assert good["outcome"] == "promoted" and good["client_errors"] == 0 and good["ended_s"] == pytest.approx(7)
    slow = simulate_rollout(plan, (Alarm("p99_latency", 0.1),), green_latency_s=0.3, rps=100, period_s=0.5)
    assert slow["outcome"] == "rolled_back"


def test_rows_of_reads_every_payload_form():
    frame = request_frame(CreditStream(seed=1).month(0, rows=3))
    for form in ("dataframe_split", "dataframe_records", "inputs"):
        rows = rows_of(payloads(frame, rows_per_request=3, form=form)[0])
        assert len(rows) == 3 and rows[1]["purpose"] == frame["purpose"].iloc[1], form
    assert rows_of(b"not json") == [] and rows_of(b"[1]") == []


def test_choose_honours_target_stickiness_and_weights():
    router = Router("http://127.0.0.1:9", "http://127.0.0.1:10", seed=0)
    try:
        assert router.choose("u1", None) == "blue"                     # weight 0
        assert router.choose("u1", "green") == "green"                 # explicit target wins
        router.set_traffic(green_weight=0.5, sticky=True)
        picks = {u: router.choose(u, None) for u in (f"user-{i}" for i in range(400))}
        assert all(router.choose(u, None) == v for u, v in picks.items())  # sticky
        share = sum(v == "green" for v in picks.values()) / len(picks)
        assert 0.4 < share < 0.6
        router.set_traffic(salt="another experiment")
        assert {u: router.choose(u, None) for u in picks} != picks          # a new salt reshuffles users
        router.set_traffic(sticky=False, green_weight=1.0)
        assert router.choose("u1", None) == "green" and router.choose("u1", "blue") == "blue"
        with pytest.raises(ValueError):
            router.set_traffic(green_weight=1.5)
    finally:
        router.close()


# ---- real processes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An MLflow store with credit@champion; blue and green lean servers; tracked for the orphan check."""
    import mlflow
    from mlflow import MlflowClient

    from mlops_lab.serving import log_credit_scorer

    folder = tmp_path_factory.mktemp("router")
    with temporary_tracking(folder, "test_router") as uri:
        yield from start_world(folder, uri, log_credit_scorer)


def start_world(folder, uri, log_credit_scorer):
    import mlflow
    from mlflow import MlflowClient

    stream = CreditStream(seed=9, rows_per_month=2000)
    with mlflow.start_run():
        as_of = "2024-01-01"  # the book's clock: outcomes known on that day (a model to serve, nothing more)
        version = log_credit_scorer(train(stream.training_window(as_of), as_of=as_of), stream.month(0).head(100),
                                    "credit")
    MlflowClient().set_registered_model_alias("credit", "champion", version.version)
    started: list[BackgroundServer] = []

    def model_server(name):
        server = BackgroundServer([sys.executable, "-m", "mlops_lab.serving", "--model-uri",
                                   "models:/credit@champion", "--port", "{port}"], name=name, health_path="/ping",
                                  env={"MLFLOW_TRACKING_URI": uri, "MLOPS_LAB_TEST_TOKEN": TOKEN}).start()
        started.append(server)
        return server

    def router(blue, green, **kwargs):
        server = BackgroundServer(router_command(blue.url, green.url if green else "", **kwargs), name="router",
                                  health_path="/ping", env={"MLOPS_LAB_TEST_TOKEN": TOKEN}).start()
        started.append(server)
        return server

    blue, green = model_server("blue"), model_server("green")
    bodies = payloads(request_frame(stream.month(2, rows=400)), rows_per_request=1)
    yield {"blue": blue, "green": green, "model_server": model_server, "router": router, "bodies": bodies,
           "folder": folder, "started": started}
    for server in started:
        server.stop()


def admin(router, path, **spec):
    status, state, _ = post(f"{router.url}/admin/{path}", json.dumps(spec))
    assert status == 200, state
    return state


def failed(log):
    return int(((log["status"] == 0) | (log["status"] >= 500)).sum())


def test_a_backend_killed_mid_canary_loses_no_request(world):
    green = world["model_server"]("doomed-green")
    router = world["router"](world["blue"], green, period_s=0.5)
    admin(router, "deploy", strategy="canary", canary_size=0.3, bake_s=30,
          alarms=[{"metric": "error_rate", "threshold": 0.05, "evaluation_periods": 3, "datapoints_to_alarm": 2}])
    killer = threading.Timer(1.0, lambda: os.killpg(green.process.pid, signal.SIGKILL))
    killer.start()
    log = run_load(router.url, world["bodies"], rate=100, duration_s=3.0, concurrency=4)
    killer.join()
    state = get_json(router.url + "/admin/state")
    assert not green.running
    assert len(log) > 200 and failed(log) == 0, "no client request lost beyond the retry policy"
    assert state["counts"]["lost"] == 0
    assert state["counts"]["retried"] >= 1 and log["retried"].any(), "the failover retried on blue"
    assert state["deployment"]["phase"] == "rolled_back", "an unreachable green trips the error alarm"
    late = log[log["t"] > time.time() - 1.0]
    assert (late["variant"] == "blue").all()
    print(f"[reliability] green killed mid-canary: {len(log)} requests, {failed(log)} lost, "
          f"{state['counts']['retried']} retried on blue, deployment {state['deployment']['phase']}")


def test_malformed_requests_get_a_4xx_and_the_router_keeps_serving(world):
    router = world["router"](world["blue"], world["green"])
    good = world["bodies"][0]
    cases = [("/invocations", b"", "application/json", 400),
             ("/invocations", b"{not json", "application/json", 400),
             ("/invocations", b'{"rows": []}', "application/json", 400),
             ("/invocations", good, "text/plain", 415),
             ("/admin/deploy", b'{"strategy": "yolo"}', "application/json", 400),
             ("/admin/traffic", b'{"green_weight": 7}', "application/json", 400),
             ("/admin/traffic", b"[]", "application/json", 400),
             ("/admin/nothing", b"{}", "application/json", 400),
             ("/elsewhere", b"{}", "application/json", 404)]
    for path, body, content_type, expected in cases:
        status, answer, _ = post(router.url + path, body, content_type)
        assert status == expected, (path, body, answer)
        assert post(router.url + "/invocations", good)[0] == 200, "still serving after a bad request"
    raw = __import__("socket").create_connection(("127.0.0.1", router.port))
    raw.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert b" 400 " in raw.recv(4096).split(b"\r\n")[0]
    raw.close()
    assert post(router.url + "/invocations", good)[0] == 200
    assert get_json(router.url + "/admin/state")["green_weight"] == 0.0, "rejected admin calls changed nothing"
    print(f"[reliability] {len(cases) + 1} malformed requests: all 4xx, the router kept serving")


def test_concurrent_clients_see_zero_errors(world):
    router = world["router"](world["blue"], world["green"])
    admin(router, "traffic", green_weight=0.5)
    log = run_load(router.url, world["bodies"], rate=None, duration_s=2.0, concurrency=16)
    assert len(log) > 200 and failed(log) == 0 and (log["status"] == 200).all()
    assert set(log["variant"]) == {"blue", "green"}
    print(f"[reliability] 16 concurrent clients: {len(log)} requests, {failed(log)} errors")


def test_a_blue_green_switch_under_load_fails_no_request(world):
    router = world["router"](world["blue"], world["green"])
    switched = []

    def switch():
        before = time.time()
        admin(router, "switch")
        switched.append((before, time.time()))

    timer = threading.Timer(1.0, switch)
    timer.start()
    log = run_load(router.url, world["bodies"], rate=150, duration_s=2.5, concurrency=8)
    timer.join()
    before, after = switched[0]
    assert failed(log) == 0 and (log["status"] == 200).all()
    assert (log.loc[log["t"] < before - 0.5, "variant"] == "blue").all()  # sent well before the switch
    assert (log.loc[log["t"] > after, "variant"] == "green").all()        # sent after it: green, always
    assert (log["t"] < before - 0.5).sum() > 50 and (log["t"] > after).sum() > 50
    print(f"[reliability] blue/green switch under load: {len(log)} requests, {failed(log)} failed")


def test_shadow_never_reaches_clients_and_compares(world):
    router = world["router"](world["blue"], world["green"])
    admin(router, "traffic", shadow_fraction=1.0)
    log = run_load(router.url, world["bodies"], rate=100, duration_s=1.5, concurrency=4)
    deadline = time.time() + 10  # the copies are sent after the answers, off the request path: let them finish
    while get_json(router.url + "/admin/state")["shadow"]["shadowed"] < len(log) and time.time() < deadline:
        time.sleep(0.1)
    shadow = get_json(router.url + "/admin/state")["shadow"]
    assert set(log["variant"]) == {"blue"} and failed(log) == 0
    assert shadow["shadowed"] >= 0.9 * len(log) and shadow["errors"] == 0
    assert shadow["decision_agreement"] == 1.0 and shadow["max_abs_diff"] < 1e-9  # same model on both


def test_capture_file_follows_the_documented_schema(world):
    path = world["folder"] / "capture.jsonl"
    router = world["router"](world["blue"], world["green"], capture=str(path), capture_sample=1.0)
    admin(router, "traffic", green_weight=0.5, sticky=True)
    log = run_load(router.url, world["bodies"], rate=None, requests=60, concurrency=2,
                   user_ids=[f"u{i}" for i in range(10)])
    post(router.url + "/invocations", b'{"rows": []}')
    deadline = time.time() + 5
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 61):
        time.sleep(0.1)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 61
    keys = {"schema", "ts", "request_id", "variant", "shadow", "status", "latency_ms", "user_id", "model_version",
            "inputs", "predictions"}
    assert all(set(r) == keys and r["schema"] == 1 for r in records)
    ok = [r for r in records if r["status"] == 200]
    assert len(ok) == 60 and all(len(r["inputs"]) == 1 and len(r["predictions"]) == 1 for r in ok)
    assert set(ok[0]["inputs"][0]) == set(request_frame(CreditStream().month(0, rows=1)).columns)
    assert {r["variant"] for r in ok} == set(log["variant"]) == {"blue", "green"}
    assert [r for r in records if r["status"] == 400][0]["predictions"] == []
    metrics = get_text(router.url + "/metrics")
    captured = [s.value for f in text_string_to_metric_families(metrics) if f.name == "router_capture_records"
                for s in f.samples if s.name.endswith("_total")]
    assert captured == [61.0]


def test_a_seeded_router_samples_the_same_requests(world):
    def captured_inputs(name, seed):
        path = world["folder"] / f"{name}.jsonl"
        router = world["router"](world["blue"], None, capture=str(path), capture_sample=0.5, seed=seed)
        for body in world["bodies"][:40]:
            assert post(router.url + "/invocations", body)[0] == 200
        router.stop()  # closing the router flushes its capture writer
        return [json.dumps(r["inputs"]) for r in map(json.loads, path.read_text().splitlines())]

    first, again, other = captured_inputs("seed5a", 5), captured_inputs("seed5b", 5), captured_inputs("seed6", 6)
    assert first == again and 8 < len(first) < 32
    assert first != other


def test_the_experiment_salt_reshuffles_sticky_users_over_http(world):
    from mlops_lab.canary import assign_arms

    router = world["router"](world["blue"], world["green"])
    users = [f"applicant-{i}" for i in range(40)]
    arms = {}
    for salt in ("exp-2025-12", "exp-2026-06"):
        assert admin(router, "traffic", green_weight=0.5, sticky=True, salt=salt)["salt"] == salt
        log = run_load(router.url, world["bodies"], rate=None, requests=2 * len(users), concurrency=2,
                       user_ids=users)
        assert (log["status"] == 200).all()
        seen = log.groupby("user_id")["variant"].agg(set)
        assert (seen.map(len) == 1).all(), "sticky within an experiment"
        arms[salt] = seen.map(min).reindex(users).to_numpy()
        assert (arms[salt] == assign_arms(users, 0.5, salt=salt)).all(), "the analysis recomputes each arm"
    assert (arms["exp-2025-12"] != arms["exp-2026-06"]).any(), "a new experiment reshuffles who is in which arm"


def test_metrics_expose_the_documented_names(world):
    router = world["router"](world["blue"], world["green"])
    run_load(router.url, world["bodies"], rate=None, requests=10, concurrency=1)
    names = {f.name for f in text_string_to_metric_families(get_text(router.url + "/metrics"))}
    documented = {"router_requests", "router_request_duration_seconds", "router_prediction", "router_retries",
                  "router_backend_errors", "router_green_weight", "router_alarm", "router_rollbacks",
                  "router_shadow_requests", "router_shadow_abs_diff", "router_capture_records"}
    assert documented <= names


def test_zz_no_orphan_process_remains(world):
    """Stop every server the tests started, then look for any process still carrying this run's tag."""
    pids = [s.process.pid for s in world["started"]]
    for server in world["started"]:
        server.stop()
    assert not any(server.running for server in world["started"])
    tagged = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("MLOPS_LAB_TEST_TOKEN") == TOKEN:
                tagged.append((proc.pid, " ".join(proc.cmdline())[:80]))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    assert tagged == [], f"orphans: {tagged}"
    print(f"[reliability] {len(pids)} servers started and stopped, 0 orphans")
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
