"""The traffic router: the guardrail policy (pure), and reliability with real processes on 127.0.0.1.

Reliability tests (the issue's list): a green killed mid-canary fails only its canary share, with a 503,
until the alarm rolls it back (never a detour to blue); malformed requests get a 4xx and the router keeps
serving; concurrent clients see zero errors; a blue/green switch under load fails no request; and no server
process outlives its test (orphan check).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import raw_exchange, temporary_tracking
from mlops_lab import CreditStream
from mlops_lab import router as router_module
from mlops_lab.loadgen import get_text, payloads, post, run_load
from mlops_lab.models import train
from mlops_lab.router import (Alarm, Deployment, PeriodStats, RolloutPlan, Router, admin_post, admin_state,
                              read_admin_token, router_command, rows_of, simulate_rollout)
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


def test_ejection_after_consecutive_failures_then_probation():
    """Outlier detection's bookkeeping: N consecutive gateway failures eject; a success clears the count;
    after the ejection period one more failure ejects again (probation)."""
    from mlops_lab.router import Ejection

    ejection = Ejection(eject_after=3, ejection_s=10)
    assert [ejection.failed(t) for t in (0, 1)] == [False, False]
    ejection.succeeded()                                      # not consecutive: the count starts over
    assert [ejection.failed(t) for t in (2, 3, 4)] == [False, False, True]
    assert ejection.ejected(13.9) and not ejection.failed(5)  # failures of requests already waiting: no new one
    assert not ejection.ejected(14.0)                         # 10 s after the ejection: tried again
    assert ejection.failed(15) and ejection.ejected(24.9)     # on probation: one failure ejects again
    assert ejection.ejections == 2
    ejection.succeeded()
    assert not ejection.failed(30) and not ejection.failed(31) and ejection.failed(32)


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
    """A backend that answers every POST /invocations with one score and counts what it received, and GET /ping."""

    def __init__(self, name, port: int = 0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # the model server's health route: 200, empty
                self.send_response(200 if self.path == "/ping" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

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

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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


def counter_values(router, name) -> dict:
    """{label values: value} of a counter in the router's registry, as /metrics shows it."""
    from prometheus_client import generate_latest

    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(generate_latest(router.registry).decode())
            if family.name == name for sample in family.samples if sample.name.endswith("_total")}


def test_a_full_capture_queue_counts_what_it_drops(tmp_path):
    """Issue 12 item 11: a record the capture queue has no room for is counted, not silently lost. The slow
    consumer is real: the capture file is a named pipe nobody reads, so the writer blocks opening it."""
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    live = _Stub("v7")
    router = Router(live.url, "", period_s=3600, seed=0, capture=str(fifo), capture_sample=1.0,
                    capture_queue_size=2)
    sent = 12
    try:
        for _ in range(sent):
            assert router.handle(b'{"inputs": [{"x": 1}]}', "application/json", None, None)[0] == 200
        dropped = router.state()["counts"]["capture_dropped"]
        assert sent - 3 <= dropped <= sent - 2, "the writer holds at most one record, the queue two"
        assert counter_values(router, "router_capture_dropped") == {(): dropped}
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # unblock the writer so the router can close
        router.close()
        os.close(reader)
        live.close()


def test_a_full_shadow_queue_counts_what_it_drops():
    """A green that takes the whole timeout (it never accepts) slows the shadow worker; the copies the
    queue has no room for are counted in /admin/state and /metrics."""
    import socket

    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)  # connections complete in the kernel, nobody ever answers
    live = _Stub("v7")
    router = Router(live.url, f"http://127.0.0.1:{black_hole.getsockname()[1]}", period_s=3600, seed=0,
                    timeout_s=1.0, shadow_queue_size=1)
    router.set_traffic(shadow_fraction=1.0)
    sent = 10
    try:
        for _ in range(sent):
            assert router.handle(b'{"inputs": [{"x": 1}]}', "application/json", None, None)[0] == 200
        dropped = router.state()["counts"]["shadow_dropped"]
        assert sent - 2 <= dropped <= sent - 1, "the worker holds at most one copy, the queue one"
        assert counter_values(router, "router_shadow_dropped") == {(): dropped}
    finally:
        router.close()
        black_hole.close()
        live.close()


def test_requests_are_counted_per_model_version():
    """The backend's X-Model-Version labels a separate counter, so router_requests_total keeps its labels."""
    blue, green = _Stub("v7"), _Stub("v8")
    router = Router(blue.url, green.url, period_s=3600, seed=0)
    try:
        for target in ["blue"] * 3 + ["green"] * 2:
            assert router.handle(b'{"inputs": [{"x": 1}]}', "application/json", None, target)[0] == 200
        assert counter_values(router, "router_model_requests") == {
            (("variant", "blue"), ("version", "v7")): 3.0, (("variant", "green"), ("version", "v8")): 2.0}
        assert set(counter_values(router, "router_requests")) == {(("code", "200"), ("variant", "blue")),
                                                                  (("code", "200"), ("variant", "green"))}
    finally:
        router.close()
        blue.close(), green.close()


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
    conn.request("GET", "/live")  # the connection is still usable: the answer was framed correctly
    alive = conn.getresponse()
    alive.read()
    conn.close()
    assert alive.status == 200
    return response.status, dict(response.getheaders()), payload


ALLOWED = {"/invocations": "POST", "/admin/traffic": "POST", "/ping": "GET, HEAD", "/health": "GET, HEAD",
           "/live": "GET, HEAD", "/metrics": "GET", "/admin/state": "GET"}
READINESS = ("/ping", "/health")  # router_http's backends are dead: not ready (503), yet alive (/live: 200)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
def test_other_methods_get_a_json_405_with_allow(router_http, method):
    _, url = router_http
    for path, allow in ALLOWED.items():
        status, headers, payload = request(url, method, path, b"{}" if method != "HEAD" else None)
        if method == "HEAD" and "HEAD" in allow:
            assert status == (503 if path in READINESS else 200) and payload == b"", (path, status)
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
             ("POST", "/live", b"{}"), ("POST", "/metrics", b"{}"), ("POST", "/admin/state", b"{}")]
    for method, path, body in wrong:
        status, headers, payload = request(url, method, path, body)
        assert status == 405 and headers["Allow"] == ALLOWED[path], (method, path)
        assert json.loads(payload)["error_code"] == "METHOD_NOT_ALLOWED", (method, path)


# ---- readiness (/ping, /health) and liveness (/live) -----------------------------------------------------
class _Hung:
    """A backend that hangs (a stopped process): the kernel accepts its connections, nobody ever answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


@contextlib.contextmanager
def backends(*kinds):
    """Backend URLs of the given kinds: "live" (a stub that answers /ping), "dead" (a closed port), "hung"."""
    made = [_Stub("live") if kind == "live" else _Hung() if kind == "hung" else None for kind in kinds]
    try:
        yield [backend.url if backend else dead_url() for backend in made]
    finally:
        for backend in made:
            if backend:
                backend.close()


@contextlib.contextmanager
def served(router):
    """``router`` behind its HTTP handler on a free port, in this process: its URL."""
    from mlops_lab.router import make_server

    httpd = make_server(router, 0)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        router.close()


def timed(url, path, method="GET"):
    """(status, body, seconds) of one request on a fresh connection."""
    import http.client
    from urllib.parse import urlsplit

    conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
    started = time.perf_counter()
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), time.perf_counter() - started
    finally:
        conn.close()


@pytest.mark.parametrize("blue, green, green_weight, ready", [
    ("live", "", 0.0, True), ("dead", "", 0.0, False),
    ("dead", "live", 0.0, False),   # green takes no traffic: its answer does not make the router ready
    ("dead", "live", 0.5, True), ("hung", "live", 0.5, True), ("live", "dead", 0.5, True),
    ("hung", "dead", 0.5, False), ("dead", "dead", 1.0, False),
    ("live", "dead", 1.0, False),   # after the switch blue takes no routed traffic: a dead green is not ready
    ("dead", "live", 1.0, True)])
def test_ping_is_ready_only_when_a_backend_that_may_receive_traffic_answers(blue, green, green_weight, ready):
    """SageMaker's /ping for the router: 200 only if blue, or green while its weight > 0, answers its own /ping;
    otherwise a 503 in JSON saying what each backend did. /health means the same; /live stays 200."""
    kinds = [blue] + ([green] if green else [])
    with backends(*kinds) as urls:
        router = Router(urls[0], urls[1] if green else None, period_s=3600, seed=0)
        router.set_traffic(green_weight=green_weight)
        with served(router) as url:
            for path in ("/ping", "/health"):
                status, body, _ = timed(url, path)
                assert status == (200 if ready else 503), (path, status, body)
                if not ready:
                    answer = json.loads(body)
                    assert answer["error_code"] == "NOT_READY" and set(answer["backends"]) == {"blue", "green"}
                head_status, head_body, _ = timed(url, path, "HEAD")
                assert head_status == status and head_body == b""
            for method in ("GET", "HEAD"):
                assert timed(url, "/live", method)[0] == 200, "alive whatever the backends"


def test_an_ejected_backend_does_not_make_the_router_ready():
    """Outlier detection already judged it: /ping does not count a backend the router would not send traffic to."""
    with backends("live") as (blue,):
        router = Router(blue, None, period_s=3600, seed=0)
        with served(router) as url:
            assert timed(url, "/ping")[0] == 200
            for _ in range(router.eject_after):
                router.ejection["blue"].failed(time.monotonic())
            status, body, _ = timed(url, "/ping")
            assert status == 503 and "ejected" in json.loads(body)["backends"]["blue"], body


@pytest.mark.parametrize("kinds, green_weight", [(("dead",), 0.0), (("hung",), 0.0), (("hung", "hung"), 0.5)],
                         ids=["dead", "hung", "both-hung"])
def test_ping_answers_503_within_its_timeout_for_dead_and_hung_backends(kinds, green_weight):
    """How long a load balancer waits for the 503. A dead backend refuses the connection at once (loopback), so
    the answer must come well within the probe's timeout: under half of it. A hung one costs exactly the
    timeout; two hung backends are probed at once, so still one timeout, never two (where serial probes land)."""
    from mlops_lab.router import PING_TIMEOUT_S

    with backends(*kinds) as urls:
        router = Router(urls[0], urls[1] if len(urls) > 1 else None, period_s=3600, seed=0)
        router.set_traffic(green_weight=green_weight)
        with served(router) as url:
            answers = [timed(url, "/ping") for _ in range(5 if kinds == ("dead",) else 3)]
    assert all(status == 503 for status, _, _ in answers), answers
    seconds = [t for _, _, t in answers]
    if kinds == ("dead",):
        assert max(seconds) < PING_TIMEOUT_S / 2, seconds
    else:
        assert min(seconds) >= 0.95 * PING_TIMEOUT_S and max(seconds) < 2 * PING_TIMEOUT_S, seconds
    print(f"[readiness] /ping with {'+'.join(kinds)} backend(s): 503 in "
          f"{min(seconds) * 1e3:.1f}-{max(seconds) * 1e3:.1f} ms")


def test_a_router_started_before_its_backends_starts_on_live_and_gets_ready_with_them():
    """A router whose backends are not up yet serves (/live) but is not ready (/ping 503), so it must be started
    with health_path="/live"; /ping turns 200 as soon as blue answers."""
    from mlops_lab.servers import ServerFailed, free_port

    port = free_port()
    blue = f"http://127.0.0.1:{port}"
    with pytest.raises(ServerFailed, match="not healthy"):
        BackgroundServer(router_command(blue), name="router-early", health_path="/ping", startup_timeout=3,
                         env={"MLOPS_LAB_TEST_TOKEN": TOKEN}).start()
    with BackgroundServer(router_command(blue), name="router-early", health_path="/live",
                          env={"MLOPS_LAB_TEST_TOKEN": TOKEN}) as router:
        assert timed(router.url, "/live")[0] == 200
        assert timed(router.url, "/ping")[0] == 503
        stub = _Stub("late", port=port)
        try:
            assert timed(router.url, "/ping")[0] == 200, "ready once its blue answers"
        finally:
            stub.close()


UNAUTHORIZED = [{}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic not-the-token"}]


def test_admin_refuses_a_missing_or_wrong_token_with_401_and_changes_nothing(router_http):
    """Issue 12 item 7: the admin API shares the data port, so every /admin/* call must carry the token."""
    from mlops_lab.router import admin_post

    router, url = router_http
    before = router.state()
    for headers in UNAUTHORIZED + [{"Authorization": router.admin_token}]:  # the bare token lacks the scheme
        for path, body in (("/admin/traffic", '{"green_weight": 1.0}'), ("/admin/switch", "{}"),
                           ("/admin/backends", '{"green": "http://127.0.0.1:9"}'), ("/admin/rollback", "{}"),
                           ("/admin/deploy", '{"strategy": "all_at_once"}')):
            status, answer, answer_headers = post(url + path, body, headers=headers)
            assert status == 401 and answer["error_code"] == "UNAUTHENTICATED", (path, headers, answer)
            assert answer_headers["WWW-Authenticate"].startswith("Bearer")
        status, headers_back, payload = request(url, "GET", "/admin/state")
        assert status == 401 and router.admin_token not in payload.decode()
    assert router.state() == before, "a refused call changed nothing"
    status, state = admin_post(url, "traffic", router.admin_token, green_weight=1.0)
    assert status == 200 and state["green_weight"] == 1.0 and router.green_weight == 1.0


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
    assert admin_post(url, "deploy", router.admin_token, strategy="canary", bake_s=60)[0] == 200  # must survive
    before = router.state()
    status, body = admin_post(url, path, router.admin_token, **spec)
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
        status, answer = admin_post(url, path, router.admin_token, **spec)
        assert status == 200, (path, answer)
    assert router.backends == {"blue": "http://localhost:8081", "green": "http://127.0.0.1:8082"}
    assert router.green_weight == 1.0 and router.salt == "exp"


# ---- real processes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An MLflow store with credit@champion; blue and green lean servers; tracked for the orphan check."""

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

    def router(blue, green, env=None, **kwargs):
        """A router process; its admin token (written by the router to a private file) rides on the server."""
        token_file = folder / f"router-{len(started)}.token"
        server = BackgroundServer(router_command(blue.url, green.url if green else "", admin_token_file=token_file,
                                                 **kwargs), name="router", health_path="/ping",
                                  env={"MLOPS_LAB_TEST_TOKEN": TOKEN, **(env or {})})
        started.append(server)
        server.start()
        server.admin_token_file, server.admin_token = token_file, read_admin_token(token_file)
        return server

    blue, green = model_server("blue"), model_server("green")
    bodies = payloads(request_frame(stream.month(2, rows=400)), rows_per_request=1)
    yield {"blue": blue, "green": green, "model_server": model_server, "router": router, "bodies": bodies,
           "folder": folder, "started": started}
    for server in started:
        server.stop()


def admin(router, path, **spec):
    status, state = admin_post(router.url, path, router.admin_token, **spec)
    assert status == 200, state
    return state


def state_of(router):
    return admin_state(router.url, router.admin_token)


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
    state = state_of(router)
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


def test_a_poisoned_client_cannot_roll_back_a_healthy_canary(world):
    """Issue 12, item 14: a body the model server cannot parse (JSON nested 100,000 deep: RecursionError) was a
    500, so the error alarm counted it against the release and rolled a healthy canary back. It is a 400 now:
    the client's failure, never the release's. A fifth of the traffic is poisoned, three times the alarm's
    5 % threshold, so the old 500s would have tripped it within two periods."""
    green = world["model_server"]("healthy-green")
    router = world["router"](world["blue"], green, period_s=0.5)
    poison = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bodies = [poison if k % 5 == 0 else body for k, body in enumerate(world["bodies"][:200])]
    admin(router, "deploy", strategy="canary", canary_size=0.5, bake_s=2.0, final_bake_s=0.5,
          alarms=[{"metric": "error_rate", "threshold": 0.05, "evaluation_periods": 3, "datapoints_to_alarm": 2}])
    log = run_load(router.url, bodies, rate=100, duration_s=3.5, concurrency=4)
    state = state_of(router)
    statuses = log["status"].value_counts().to_dict()
    assert set(statuses) == {200, 400}, statuses                  # no 5xx: nothing counts against green
    assert 0.15 < statuses[400] / len(log) < 0.25, statuses         # the poisoned fifth, answered 400
    assert ((log["status"] == 400) & (log["variant"] == "green")).any(), "green saw the poison too"
    assert state["deployment"]["phase"] == "promoted", [e["event"] for e in state["events"]]


def test_a_started_router_keeps_its_admin_token_private(world):
    """The token is generated per router and handed over in a 0600 file, never in the command line or log;
    an operator's token (environment variable) is used as given."""
    from mlops_lab.router import ADMIN_TOKEN_ENV, admin_post, admin_state, read_admin_token

    router = world["router"](world["blue"], world["green"])
    token = read_admin_token(router.admin_token_file)
    assert oct(router.admin_token_file.stat().st_mode & 0o777) == oct(0o600)
    assert len(token) >= 32 and token == router.admin_token
    assert token not in router.log_tail(200) and token not in " ".join(psutil.Process(router.process.pid).cmdline())
    assert admin_post(router.url, "traffic", token, green_weight=0.5)[0] == 200
    for headers in UNAUTHORIZED:
        status, answer, _ = post(router.url + "/admin/traffic", '{"green_weight": 1.0}', headers=headers)
        assert status == 401 and answer["error_code"] == "UNAUTHENTICATED"
    assert get_text(router.url + "/admin/state").find('"green_weight"') == -1, "the state needs the token too"
    assert admin_state(router.url, token)["green_weight"] == 0.5, "refused calls changed nothing"
    given = f"operator-{uuid.uuid4().hex}"
    other = world["router"](world["blue"], world["green"], env={ADMIN_TOKEN_ENV: given})
    assert read_admin_token(other.admin_token_file) == given and admin_state(other.url, given)["green_weight"] == 0
    other.stop()


def metric_samples(router, name):
    """{variant label: value} of a counter in the router's /metrics."""
    return {sample.labels.get("variant"): sample.value
            for family in text_string_to_metric_families(get_text(router.url + "/metrics")) if family.name == name
            for sample in family.samples if sample.name.endswith("_total")}


def test_a_hung_green_is_ejected_then_served_again_after_the_ejection_period(world):
    """Issue 12 item 18: a backend stopped with SIGSTOP (hung, not dead) costs each request the full timeout,
    but only until outlier detection ejects it; ejected answers come back at once, still as green's errors.

    The bound for "at once": an ejected answer does no I/O to the backend, only the client's round trip to
    the router on loopback (milliseconds), so a quarter of the timeout leaves a wide margin on a loaded
    machine while staying far from the timeout that a request waiting on the hung backend costs.
    """
    timeout_s, eject_after, ejection_s = 1.5, 3, 3.0
    green = world["model_server"]("hung-green")
    router = world["router"](world["blue"], green, timeout_s=timeout_s, eject_after=eject_after,
                             ejection_s=ejection_s)
    body, to_green = world["bodies"][0], {"X-Target-Variant": "green"}
    assert post(router.url + "/invocations", body, headers=to_green)[0] == 200
    os.kill(green.process.pid, signal.SIGSTOP)
    try:
        answers = []
        for _ in range(eject_after + 5):
            start = time.perf_counter()
            status, _, headers = post(router.url + "/invocations", body, headers=to_green, timeout=5 * timeout_s)
            answers.append((time.perf_counter() - start, status, headers["X-Variant"]))
            if len(answers) == eject_after:
                ejected_at = time.monotonic()
        waited, fast = [t for t, _, _ in answers[:eject_after]], [t for t, _, _ in answers[eject_after:]]
        assert all(status == 503 and variant == "green" for _, status, variant in answers), answers
        assert min(waited) >= 0.9 * timeout_s, ("until the ejection, each request waits the timeout", waited)
        assert max(fast) < timeout_s / 4, ("ejected: answered at once", fast)
        state = state_of(router)
        assert state["counts"]["ejections"] == 1 and state["counts"]["ejected"] == len(fast)
        assert state["counts"]["unreachable"] == len(answers)
        assert metric_samples(router, "router_backend_errors")["green"] == len(answers), "green's errors, all"
        assert metric_samples(router, "router_ejections") == {"green": 1.0}
        status, _, headers = post(router.url + "/invocations", body)
        assert status == 200 and headers["X-Variant"] == "blue", "blue is untouched"
    finally:
        os.kill(green.process.pid, signal.SIGCONT)
    time.sleep(max(0.0, ejected_at + ejection_s - time.monotonic()) + 0.1)
    status, _, headers = post(router.url + "/invocations", body, headers=to_green)
    assert status == 200 and headers["X-Variant"] == "green", "after the ejection period green serves again"
    assert state_of(router)["counts"]["ejections"] == 1
    print(f"[reliability] hung green: {eject_after} requests waited {min(waited):.2f}-{max(waited):.2f} s, then "
          f"ejected answers in at most {max(fast) * 1e3:.0f} ms; served again after {ejection_s:g} s")


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
        status, answer, _ = post(router.url + path, body, content_type,
                                 headers={"Authorization": f"Bearer {router.admin_token}"})
        assert status == expected, (path, body, answer)
        assert post(router.url + "/invocations", good)[0] == 200, "still serving after a bad request"
    raw = __import__("socket").create_connection(("127.0.0.1", router.port))
    raw.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert b" 400 " in raw.recv(4096).split(b"\r\n")[0]
    raw.close()
    assert post(router.url + "/invocations", good)[0] == 200
    assert state_of(router)["green_weight"] == 0.0, "rejected admin calls changed nothing"
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
    while state_of(router)["shadow"]["shadowed"] < len(log) and time.time() < deadline:
        time.sleep(0.1)
    shadow = state_of(router)["shadow"]
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


# ---- the router facing clients it does not control: bursts, idle floods, bodies (mlops_lab.httpkit) ---------
IDLE_S, BODY_S, HARDENING_MARGIN_S = 0.5, 0.5, 1.0


@pytest.fixture
def served_router():
    """A router in this process on a free port, with a short idle timeout and 4 handler threads."""
    from mlops_lab.router import make_server

    live = _Stub("v1")
    router = Router(live.url, None, period_s=3600, seed=0)
    httpd = make_server(router, 0, idle_timeout_s=IDLE_S, body_timeout_s=BODY_S, max_threads=4)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    router.close()
    live.close()


def _live(port: int) -> bytes:
    """The router's own liveness (/live): whether the router serves, whatever its backends."""
    return raw_exchange(port, b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def test_a_burst_of_fresh_connections_is_all_answered_by_the_router(served_router):
    start, answers = threading.Barrier(256), []

    def client():
        start.wait()
        try:
            answers.append(_live(served_router))
        except OSError as error:
            answers.append(repr(error).encode())

    clients = [threading.Thread(target=client) for _ in range(256)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(60)
    assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) == 256, {a[:40] for a in answers}


def test_an_idle_flood_is_closed_and_the_router_keeps_serving(served_router):
    idle = [socket.create_connection(("127.0.0.1", served_router)) for _ in range(10)]
    started = time.monotonic()
    assert _live(served_router).startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < math.ceil(10 / 4) * IDLE_S + HARDENING_MARGIN_S
    for conn in idle:
        conn.settimeout(HARDENING_MARGIN_S)
        assert conn.recv(1) == b"", "the router closed the idle connection"
        conn.close()


@pytest.mark.parametrize("headers, status", [
    (b"Content-Length: abc\r\n", b"400"), (b"Content-Length: -5\r\n", b"400"),
    (b"Content-Length: 2000000\r\n", b"413"), (b"Transfer-Encoding: chunked\r\n", b"411")])
def test_a_body_of_unknown_or_excessive_size_is_refused_by_the_router(served_router, headers, status):
    answer = raw_exchange(served_router, b"POST /invocations HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer, answer[:200]


def test_a_stalled_body_is_cut_off_and_the_router_keeps_serving(served_router):
    started = time.monotonic()
    answer = raw_exchange(served_router, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < BODY_S + HARDENING_MARGIN_S
    assert _live(served_router).startswith(b"HTTP/1.1 200")


def test_the_shadow_scores_are_served_to_the_admin_only():
    """The challenger's own live scores from the shadow phase: the reference its canary's scores are judged by."""
    from mlops_lab.router import admin_call

    live, shadow = _Stub("v1"), _Stub("v2")
    router = Router(live.url, shadow.url, period_s=3600, seed=0)
    router.set_traffic(shadow_fraction=1.0)
    from mlops_lab.router import make_server

    httpd = make_server(router, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        for _ in range(5):
            assert router.handle(b'{"inputs": [{"x": 1}]}', "application/json", None, None)[0] == 200
        deadline = time.monotonic() + 5
        while len(router.shadow_pairs) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, scores = admin_call(url, "GET", "/admin/shadow-scores", router.admin_token)
        assert status == 200 and scores == {"blue": [0.25] * 5, "green": [0.25] * 5}
        assert admin_call(url, "GET", "/admin/shadow-scores", "wrong")[0] == 401
    finally:
        httpd.shutdown()
        httpd.server_close()
        router.close()
        live.close()
        shadow.close()
