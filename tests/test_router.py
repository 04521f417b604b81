"""The traffic router: the guardrail policy (pure), and reliability with real processes on 127.0.0.1.

Reliability tests (the issue's list): a green killed mid-canary fails only its canary share, with a 503,
until the alarm rolls it back (never a detour to blue); malformed requests get a 4xx and the router keeps
serving; concurrent clients see zero errors; a blue/green switch under load fails no request; and no server
process outlives its test (orphan check).
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
from mlops_lab import router as router_module
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
    for bad in ({"strategy": "yolo"}, {"canary_size": 0}, {"canary_size": 1.0}, {"bake_s": -1},
                {"bake_s": float("nan")}, {"final_bake_s": float("inf")}):  # a NaN bake would bake forever
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


def test_no_evidence_no_promotion():
    """A bake in which green served (almost) nobody is inconclusive: it never promotes, and after the stated
    limit (router.INCONCLUSIVE_BAKES bakes) the deployment is rolled back; with enough green traffic it promotes."""
    alarms = (Alarm("error_rate", 0.05, evaluation_periods=3, min_requests=5),
              Alarm("p99_latency", 0.2, evaluation_periods=2, min_requests=3))
    plan = RolloutPlan("canary", canary_size=0.2, bake_s=2, final_bake_s=1)
    assert simulate_rollout(plan, alarms, rps=0.0)["outcome"] == "rolled_back", "no traffic: no promotion"
    limit = router_module.INCONCLUSIVE_BAKES
    idle = Deployment(plan, alarms)
    weights = [idle.tick(0.5 * i, PeriodStats(0, 0, 0.0)) for i in range(1, 4 * limit + 3)]  # 0.5 s periods
    assert "promoted" not in {e[1] for e in idle.events} and idle.step == 0
    assert idle.phase == "rolled_back" and idle.events[-1][1] == "inconclusive: too little green traffic"
    assert idle.events[-1][0] == limit * plan.bake_s, "rolled back at the stated limit"
    assert set(weights[:4 * limit - 1]) == {0.2} and set(weights[4 * limit - 1:]) == {0.0}
    assert Deployment(plan, alarms).min_green_requests == 15, "the alarms' own min_requests x periods"
    assert Deployment(plan, alarms, min_green_requests=40).min_green_requests == 40
    scarce = Deployment(plan, alarms)  # 14 green requests over the bake: one short
    assert [scarce.tick(t, PeriodStats(n, 0, 0.01)) for t, n in ((1, 7), (2, 7))] == [0.2, 0.2]
    assert scarce.step == 0 and scarce.phase == "baking", "the bake has passed, the evidence has not"
    assert scarce.tick(2.5, PeriodStats(1, 0, 0.01)) == 1.0, "the 15th request completes the evidence"
    for final in (0.5, 1.0, 2.0):  # the final bake needs its own evidence: none comes, no switch
        scarce.tick(scarce.step_started + final, PeriodStats(0, 0, 0.0))
    assert scarce.phase == "baking"
    scarce.tick(scarce.step_started + limit * plan.final_bake_s, PeriodStats(0, 0, 0.0))
    assert scarce.phase == "rolled_back"
    busy = Deployment(plan, alarms)
    for t in (1, 2, 2.5, 3):
        busy.tick(t, PeriodStats(20, 0, 0.01))
    assert busy.phase == "promoted"
    assert simulate_rollout(plan, alarms, rps=100.0, period_s=0.5)["outcome"] == "promoted"


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


@pytest.mark.parametrize("operator", ["rollback", "set_traffic"])
def test_an_operator_rollback_during_a_controller_tick_wins(monkeypatch, operator):
    """The controller's tick and the write of its weight are one atomic step: an operator's rollback issued
    while a tick is running is never overwritten by the tick's (older) weight."""
    original_tick = Deployment.tick
    inside, rounds = threading.Event(), 20

    def slow_tick(self, now, stats):
        weight = original_tick(self, now, stats)
        inside.set()
        time.sleep(0.02)  # widen the window between deciding a weight and writing it back
        return weight

    monkeypatch.setattr(Deployment, "tick", slow_tick)
    router = Router("http://127.0.0.1:9", "http://127.0.0.1:10", period_s=0.01, seed=0)
    try:
        for _ in range(rounds):
            router.deploy(RolloutPlan("canary", canary_size=0.2, bake_s=3600), ())
            inside.clear()
            assert inside.wait(5), "the controller ticks"
            if operator == "rollback":
                router.rollback("operator: stop")
            else:
                router.set_traffic(green_weight=0.0)
            time.sleep(0.05)  # let any tick in flight finish writing
            state = router.state()
            assert state["deployment"]["phase"] == "rolled_back"
            assert state["green_weight"] == 0.0, "the operator's rollback was overwritten by the controller"
    finally:
        router.close()


# ---- no failover around the plan: in-process stub backends (real HTTP on 127.0.0.1, no model) ---------
class _Stub:
    """A backend that answers every POST /invocations with one score and counts what it received."""

    def __init__(self, name):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.hits += 1
                body = b'{"predictions": [0.25]}'
                self.send_response(200)
                for key, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                   ("X-Model-Version", name)):
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A port nothing listens on: connecting is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def one_dead(request):
    """A router whose ``request.param`` variant is unreachable; the other one is a live stub."""
    dead = request.param
    live = _Stub("live")
    urls = {"blue": live.url, "green": live.url, dead: dead_url()}
    router = Router(urls["blue"], urls["green"], period_s=3600, seed=0)
    yield router, dead, live
    router.close()
    live.close()


MODES = {"canary weight": {"green_weight": 0.3},
         "sticky A/B": {"green_weight": 0.5, "sticky": True, "salt": "exp-1"},
         "shadow": {"green_weight": 0.0, "shadow_fraction": 1.0}}
USERS = [f"user-{i}" for i in range(60)]


@pytest.mark.parametrize("one_dead", ["green", "blue"], indirect=True)
@pytest.mark.parametrize("mode", [*MODES, "target header"])
def test_an_unreachable_variant_is_never_routed_around(one_dead, mode):
    """A request the plan gives to a variant is answered by that variant or refused (503), never by the other."""
    router, dead, live = one_dead
    router.set_traffic(**MODES.get(mode, {}))
    targets = [("blue", "green")[i % 2] if mode == "target header" else None for i in range(len(USERS))]
    answers = [router.handle(b'{"inputs": [{"x": 1}]}', "application/json", user, target)
               for user, target in zip(USERS, targets)]
    twin = Router(live.url, live.url, period_s=3600, seed=0)  # same seed, same settings: the plan's choices
    twin.set_traffic(**MODES.get(mode, {}))
    assigned = [target or twin.choose(user, None) for user, target in zip(USERS, targets)]
    twin.close()
    for (status, payload, headers), variant in zip(answers, assigned):
        assert headers["X-Variant"] == variant, "the plan's variant answers, or no one does"
        if variant == dead:
            assert status == 503, payload
            body = json.loads(payload)
            assert body["error_code"] == "VARIANT_UNAVAILABLE" and f"{dead} variant" in body["message"]
            assert "unreachable" in body["message"]
        else:
            assert status == 200 and headers["X-Model-Version"] == "live"
    live_share = sum(status == 200 for status, _, _ in answers) / len(answers)
    expected_live = {"canary weight": (0.7, 0.3), "sticky A/B": (0.5, 0.5), "shadow": (1.0, 0.0),
                     "target header": (0.5, 0.5)}[mode][dead == "blue"]
    assert abs(live_share - expected_live) <= 0.2, "every request the plan gave the live variant was served"
    if mode == "shadow" and dead == "blue":
        time.sleep(0.3)  # let the shadow worker drain (it only copies answers blue gave, so nothing)
        assert live.hits == 0, "a dead blue sends nothing to green, not even shadow copies"
    if dead == "green":
        with router.lock:
            green_failures = [failed for _, failed in router._green_period]
        assert len(green_failures) == sum(v == "green" for v in assigned) and all(green_failures), \
            "an unreachable green still counts against green's alarms"


# ---- the HTTP surface, in process (no model: admin and method handling only) -------------------------
@pytest.fixture
def router_http():
    """A Router behind its HTTP handler on a free port, in this process."""
    from mlops_lab.router import make_server

    router = Router(dead_url(), dead_url(), period_s=3600, seed=0)
    server = make_server(router, 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield router, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    router.close()


def request(url, method, path, body=None):
    import http.client
    from urllib.parse import urlsplit

    conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    response = conn.getresponse()
    payload = response.read()
    conn.request("GET", "/ping")  # the connection is still usable: the answer was framed correctly
    alive = conn.getresponse()
    alive.read()
    conn.close()
    assert alive.status == 200
    return response.status, dict(response.getheaders()), payload


ALLOWED = {"/invocations": "POST", "/admin/traffic": "POST", "/ping": "GET, HEAD", "/metrics": "GET",
           "/admin/state": "GET"}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
def test_other_methods_get_a_json_405_with_allow(router_http, method):
    _, url = router_http
    for path, allow in ALLOWED.items():
        status, headers, payload = request(url, method, path, b"{}" if method != "HEAD" else None)
        if method == "HEAD" and "HEAD" in allow:
            assert status == 200 and payload == b"", path
            continue
        assert status == 405 and headers["Allow"] == allow, (method, path, status)
        if method == "HEAD":
            assert payload == b"", "a HEAD answer has no body"
        else:
            body = json.loads(payload)
            assert body["error_code"] == "METHOD_NOT_ALLOWED" and method in body["message"], body
    status, _, payload = request(url, method, "/nowhere", b"{}" if method != "HEAD" else None)
    assert status == 404


def test_get_and_post_on_the_other_kind_of_route_are_405(router_http):
    _, url = router_http
    wrong = [("GET", "/invocations", None), ("GET", "/admin/traffic", None), ("POST", "/ping", b"{}"),
             ("POST", "/metrics", b"{}"), ("POST", "/admin/state", b"{}")]
    for method, path, body in wrong:
        status, headers, payload = request(url, method, path, body)
        assert status == 405 and headers["Allow"] == ALLOWED.get(path, "GET, HEAD" if path == "/ping" else "POST")
        assert json.loads(payload)["error_code"] == "METHOD_NOT_ALLOWED", (method, path)


NAN, INF = float("nan"), float("inf")
REFUSED = [  # (admin path, spec, the field the 400 must name)
    ("traffic", {"green_weight": 1.5}, "green_weight"), ("traffic", {"green_weight": NAN}, "green_weight"),
    ("traffic", {"green_weight": "0.5"}, "green_weight"), ("traffic", {"green_weight": True}, "green_weight"),
    ("traffic", {"shadow_fraction": 5}, "shadow_fraction"), ("traffic", {"shadow_fraction": -INF}, "shadow_fraction"),
    ("traffic", {"capture_sample": 5}, "capture_sample"), ("traffic", {"capture_sample": NAN}, "capture_sample"),
    ("traffic", {"sticky": "no"}, "sticky"), ("traffic", {"salt": 7}, "salt"),
    ("traffic", {"green_weight": 0.5, "shadow_fraction": 2}, "shadow_fraction"),  # nothing half-applied
    ("traffic", {"weight": 0.5}, "weight"),
    ("deploy", {"bake_s": NAN}, "bake_s"), ("deploy", {"bake_s": INF}, "bake_s"), ("deploy", {"bake_s": 0}, "bake_s"),
    ("deploy", {"bake_s": -1}, "bake_s"), ("deploy", {"bake_s": "5"}, "bake_s"),
    ("deploy", {"final_bake_s": NAN}, "final_bake_s"), ("deploy", {"canary_size": NAN}, "canary_size"),
    ("deploy", {"canary_size": 1.5}, "canary_size"), ("deploy", {"step_size": 0}, "step_size"),
    ("deploy", {"strategy": "yolo"}, "strategy"), ("deploy", {"bake": 5}, "bake"),
    ("deploy", {"alarms": "error_rate"}, "alarms"), ("deploy", {"alarms": [7]}, "alarms[0]"),
    ("deploy", {"alarms": [{"metric": "cpu", "threshold": 1}]}, "alarms[0].metric"),
    ("deploy", {"alarms": [{"metric": "error_rate", "threshold": NAN}]}, "alarms[0].threshold"),
    ("deploy", {"alarms": [{"metric": "error_rate"}]}, "alarms[0].threshold"),
    ("deploy", {"alarms": [{"metric": "error_rate", "threshold": 0.1, "evaluation_periods": 0}]},
     "alarms[0].evaluation_periods"),
    ("deploy", {"alarms": [{"metric": "error_rate", "threshold": 0.1, "evaluation_periods": 2.5}]},
     "alarms[0].evaluation_periods"),
    ("deploy", {"alarms": [{"metric": "error_rate", "threshold": 0.1, "datapoints_to_alarm": 4}]},
     "alarms[0].datapoints_to_alarm"),
    ("deploy", {"alarms": [{"metric": "error_rate", "threshold": 0.1, "min_requests": -1}]},
     "alarms[0].min_requests"),
    ("deploy", {"alarms": [{"metric": "error_rate", "threshold": 0.1, "window": 3}]}, "alarms[0].window"),
    ("backends", {"blue": "not a url"}, "blue"), ("backends", {"green": "http://example.com:8080"}, "green"),
    ("backends", {"blue": "https://127.0.0.1:8080"}, "blue"), ("backends", {"blue": "http://127.0.0.1"}, "blue"),
    ("backends", {"blue": "http://127.0.0.1:99999"}, "blue"),
    ("backends", {"blue": "http://localhost:8080/x"}, "blue"),
    ("backends", {"blue": 8080}, "blue"), ("backends", {"green": "http://127.0.0.1:8080", "blue": ""}, "blue"),
    ("backends", {"red": "http://127.0.0.1:8080"}, "red"),
    ("rollback", {"reason": 5}, "reason"), ("switch", {"now": True}, "now"),
]


@pytest.mark.parametrize("path, spec, field", REFUSED, ids=[f"{p}-{f}-{i}" for i, (p, _, f) in enumerate(REFUSED)])
def test_admin_refuses_invalid_values_and_changes_nothing(router_http, path, spec, field):
    router, url = router_http
    assert post(f"{url}/admin/deploy", json.dumps({"strategy": "canary", "bake_s": 60}))[0] == 200  # must survive
    before = router.state()
    status, body, _ = post(f"{url}/admin/{path}", json.dumps(spec))
    assert status == 400, body
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and body["field"] == field, body
    assert field.split(".")[-1].split("[")[0] in body["message"]
    assert router.state() == before, "a refused admin call changed nothing"


def test_admin_accepts_valid_values(router_http):
    router, url = router_http
    good = [("traffic", {"green_weight": 0.25, "sticky": True, "salt": "exp", "shadow_fraction": 0.0,
                         "capture_sample": 1}),
            ("backends", {"blue": "http://localhost:8081/", "green": "http://127.0.0.1:8082"}),
            ("deploy", {"strategy": "linear", "step_size": 0.5, "bake_s": 1.5, "final_bake_s": 1,
                        "alarms": [{"metric": "p99_latency", "threshold": 0.2, "evaluation_periods": 3,
                                    "datapoints_to_alarm": 3, "min_requests": 3}]}),
            ("rollback", {"reason": "operator"}), ("switch", {})]
    for path, spec in good:
        status, answer, _ = post(f"{url}/admin/{path}", json.dumps(spec))
        assert status == 200, (path, answer)
    assert router.backends == {"blue": "http://localhost:8081", "green": "http://127.0.0.1:8082"}
    assert router.green_weight == 1.0 and router.salt == "exp"


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


def test_a_green_killed_mid_canary_fails_only_its_canary_share_until_rollback(world):
    """No failover around the plan: the canary's requests fail (503) until the alarm rolls green back.

    The bound: the error alarm needs 2 breaching half-second periods, and the kill can land at the start of
    one, so green's share (30 %) of 100 requests per second fails for at most 3 periods; 50 % margin for
    bursts of the load generator.
    """
    green = world["model_server"]("doomed-green")
    router = world["router"](world["blue"], green, period_s=0.5)
    canary, rate, period_s = 0.3, 100, 0.5
    admin(router, "deploy", strategy="canary", canary_size=canary, bake_s=30,
          alarms=[{"metric": "error_rate", "threshold": 0.05, "evaluation_periods": 3, "datapoints_to_alarm": 2}])
    killer = threading.Timer(1.0, lambda: os.killpg(green.process.pid, signal.SIGKILL))
    killer.start()
    log = run_load(router.url, world["bodies"], rate=rate, duration_s=3.0, concurrency=4)
    killer.join()
    state = get_json(router.url + "/admin/state")
    assert not green.running
    bad = log[(log["status"] == 0) | (log["status"] >= 500)]
    bound = int(canary * rate * 3 * period_s * 1.5)
    assert len(log) > 200 and 0 < len(bad) <= bound, (len(bad), bound)
    assert (bad["variant"] == "green").all() and (bad["status"] == 503).all(), "only green's share failed"
    assert not log["retried"].any(), "no request was sent around the plan to blue"
    assert state["counts"]["unreachable"] == len(bad)
    assert state["deployment"]["phase"] == "rolled_back", "an unreachable green trips the error alarm"
    late = log[log["t"] > time.time() - 1.0]
    assert (late["variant"] == "blue").all() and (late["status"] == 200).all()
    print(f"[reliability] green killed mid-canary: {len(log)} requests, {len(bad)} failed with 503 "
          f"(bound {bound}), deployment {state['deployment']['phase']}")


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
