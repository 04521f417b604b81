"""The traffic router: one endpoint in front of two model servers, blue (the champion) and green (the challenger).

    python -m mlops_lab.router --blue http://127.0.0.1:8081 --green http://127.0.0.1:8082 --port 8080 \\
        [--capture workspace/capture.jsonl --capture-sample 0.2]

Clients ``POST /invocations`` to the router exactly as they would to a model server (MLflow's contract);
the router picks a variant, forwards the request over a kept-alive connection and returns the answer with an
``X-Variant: blue|green`` header. What it can do, and its SageMaker name:

- **fixed weights** (production variants with weights): a share ``green_weight`` of requests goes to green;
- **A/B** (``sticky``): a client's ``X-User-Id`` header is hashed with the experiment's ``salt``
  (:func:`assignment_bucket`), so each user always sees the same variant within an experiment, and a new
  experiment (a new salt) reshuffles who is in which arm;
  ``X-Target-Variant: blue|green`` picks a variant explicitly (SageMaker's ``TargetVariant``);
- **shadow** (shadow tests): clients only ever get blue's answer; a sampled copy (``shadow_fraction``) of
  live requests is sent to green off the request path, and the two answers are compared;
- **deployments** with guardrails (SageMaker deployment guardrails): ``all_at_once``, ``canary`` and
  ``linear`` traffic shifting, each step followed by a *baking* period watched by alarms; any alarm during
  a bake rolls all traffic back to blue; a step passes only when green served enough requests to judge
  (no evidence, no promotion: a step that stays inconclusive is rolled back); a deployment that survives
  its final bake ends with the **blue/green switch**, green taking 100 % in one atomic step.

The deployment logic is a pure state machine in :mod:`mlops_lab.rollout` (:class:`Deployment` with
:class:`RolloutPlan` and :class:`Alarm`), driven here by the router's clock and by :func:`simulate_rollout` in
a fast offline simulation: the chapter's widget runs the very same code. The admin API's values are checked by
:mod:`mlops_lab.router_admin`. This module is the HTTP proxy and its controller loop; it re-exports the
rollout names, so ``from mlops_lab.router import RolloutPlan`` keeps working.

Failure policy: the router never routes around the plan. A request whose variant cannot be reached
(connection refused or reset, timeout) may only go to another replica of the *same* variant; each variant
has one backend here, so there is none, and the client gets a 503 ``{"error_code": "VARIANT_UNAVAILABLE",
"message": "the green variant is unreachable: ..."}`` with ``X-Variant`` naming that variant. Sending it to
the other variant instead would give a canary's clients a release nobody has judged, a shadow test's clients
the shadow, and an A/B test's user the other arm. The failure counts as that variant's error (a green that
cannot be reached counts against green's alarms, which then roll the canary back). A kept-alive connection
the backend closed meanwhile is reopened once (same backend), within the same budget: a request waits for
its backend at most ``--timeout`` seconds (5 s) in all. An HTTP answer (even a 5xx) is passed to the client as
it is, never retried.

Outlier detection (Envoy's ``consecutive_gateway_failure`` with ``base_ejection_time``): a hung backend (a
process stopped, not dead: the kernel still accepts its connections) would make every request to it wait the
full timeout. So after ``--eject-after`` (3) consecutive timeouts or connection failures the backend is
*ejected* for ``--ejection-s`` (10 s): requests the plan gives its variant are answered 503 at once
(``VARIANT_UNAVAILABLE``, "... is ejected ..."), and still count as that variant's errors, so a canary's
alarms see them and roll it back. When the period ends the backend is tried again; one more failure ejects it
again, one success clears its record. Why these defaults: a healthy server on the loopback interface does not
time out or refuse connections, so 3 in a row is a hung or dead server, not bad luck, and waiting for Envoy's
5 would cost clients 2 more timeouts; 10 s is shorter than Envoy's 30 s because a class server's backends
come back within seconds (a restart), and it is longer than the alarm periods (0.5 to 1 s), so the alarms
judge green on fast failures rather than on requests stuck for the whole timeout. HTTP answers (even 5xx)
never eject: the backend is alive and the alarms judge its answers.

Health, as a load balancer reads it: ``GET /ping`` is readiness, with SageMaker's meaning (send me traffic): 200
only when a backend that may receive traffic -- blue while green's weight is below 1, green while it is above 0,
and not one that outlier detection ejected -- answers its own ``/ping`` with a 200 within ``PING_TIMEOUT_S``
(0.5 s); otherwise a
503 ``{"error_code": "NOT_READY", "backends": {"blue": "<why not>", ...}}``. The backends are probed at once, on
every ``/ping``: with a dead backend (port closed) the 503 comes at once (measured 1-9 ms), with a hung one
(connections accepted, never answered) after the 0.5 s timeout (measured 0.50-0.51 s, two hung backends too).
``/health`` means the same as ``/ping``: a check that needs the router to work also needs a backend. ``GET /live``
is liveness: 200 while the router process serves, whatever its backends; a router started before its backends
is started on it (``BackgroundServer(router_command(...), health_path="/live")``).

Admin API (JSON): ``GET /admin/state``; ``GET /admin/shadow-scores`` (each shadowed row's two scores);
``POST /admin/traffic`` ``{"green_weight", "sticky", "salt",
"shadow_fraction", "capture_sample"}``; ``POST /admin/deploy`` ``{"strategy", "canary_size", "step_size",
"bake_s", "final_bake_s", "alarms": [{"metric", "threshold", ...}]}``; ``POST /admin/rollback``;
``POST /admin/switch`` (green takes 100 % at once); ``POST /admin/backends`` ``{"blue", "green"}``.
Every field is checked before anything changes: weights and shares are finite numbers in [0, 1], bake
times finite and > 0, backends ``http://127.0.0.1:<port>`` or ``http://localhost:<port>``, and unknown
fields are refused; a refusal is a 400 ``{"error_code": "INVALID_PARAMETER_VALUE", "field", "message"}``.
A route asked with a method it does not take answers 405 in JSON with an ``Allow`` header (``HEAD`` is
answered on ``/ping``, ``/health`` and ``/live``).

The admin API shares the data port, so every ``/admin/*`` call (``GET /admin/state`` too) must carry the
router's token, ``Authorization: Bearer <token>``; without it, or with a wrong one, the answer is a 401
``{"error_code": "UNAUTHENTICATED"}`` and nothing changes (the comparison takes constant time,
:func:`hmac.compare_digest`). Each router generates its token at start (:func:`secrets.token_urlsafe`, 256
bits) unless its environment gives one (``MLOPS_ROUTER_ADMIN_TOKEN``), and hands it over in a file only its
owner can read (``--admin-token-file``, mode 0600), never in the command line, a URL or the log;
:func:`admin_post` and :func:`admin_state` are the clients. Backends stay loopback-only.

Prometheus metrics (``GET /metrics``), names kept stable for the monitoring chapter:

====================================  =========  ======================================================
metric                                type       labels / meaning
====================================  =========  ======================================================
``router_requests_total``             counter    ``variant``, ``code``: client requests answered
``router_request_duration_seconds``   histogram  ``variant``: time from request received to answer sent
``router_prediction``                 histogram  ``variant``: each score returned to a client
``router_retries_total``              counter    ``variant``: failovers to another replica of that variant
                                                 (none today: one backend per variant; kept for dashboards)
``router_backend_errors_total``       counter    ``variant``: unreachable backend or 5xx
``router_green_weight``               gauge      share of traffic routed to green now
``router_alarm``                      gauge      ``alarm``: 1 while the alarm is in ALARM
``router_rollbacks_total``            counter    automatic and manual rollbacks
``router_shadow_requests_total``      counter    ``outcome``: ok or error (copies sent to green)
``router_shadow_abs_diff``            histogram  |green score - blue score| per shadowed row
``router_capture_records_total``      counter    lines written to the capture file
``router_ejections_total``            counter    ``variant``: backends ejected by outlier detection
``router_model_requests_total``       counter    ``variant``, ``version``: requests a model answered, by the
                                                 backend's ``X-Model-Version`` (a separate counter, so
                                                 ``router_requests_total`` keeps its labels)
``router_shadow_dropped_total``       counter    shadow copies dropped because the shadow queue was full
``router_capture_dropped_total``      counter    capture records dropped because the capture queue was full
====================================  =========  ======================================================

Data capture (``--capture PATH``): a share ``--capture-sample`` of requests (chosen at random) is appended
to PATH as JSON lines, one object per request, written by a background thread off the request path. The
queue to that thread (10 000 records) and the shadow queue (1 000 copies) are bounded so that a slow disk or
green never slows the clients' answers; what does not fit is dropped and counted (``capture_dropped`` and
``shadow_dropped`` in ``/admin/state``'s counts, and in ``/metrics``), never lost silently.
Schema version 1 (stable; new keys may be added, none removed or renamed):

====================  ===============  =================================================================
key                   type             meaning
====================  ===============  =================================================================
``schema``            int              1
``ts``                float            Unix time (s) the router received the request
``request_id``        str              unique id (also sent back as ``X-Request-Id``)
``variant``           str              ``blue`` or ``green``: the variant that answered
``shadow``            bool             true for the shadow copy sent to green (the client saw blue's)
``status``            int              HTTP status of the answer (503: the variant was unreachable)
``latency_ms``        float            time in the router, or green's time for a shadow copy
``user_id``           str or null      the request's ``X-User-Id`` header
``model_version``     str              the backend's ``X-Model-Version`` header ('' if none)
``inputs``            list of objects  the request's rows as ``{column: value}`` records (any payload form)
``predictions``       list of floats   the scores returned (empty on an error)
====================  ===============  =================================================================
"""
from __future__ import annotations

import argparse
import hmac
import http.client
import json
import os
import queue
import random
import secrets
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if not __package__:   # run as a script (router_command): make the package importable; its __init__ is light
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The rollout state machine and the admin values live in their own modules; chapters import them from here too.
from mlops_lab.rollout import (INCONCLUSIVE_BAKES, STRATEGIES, Alarm, Deployment, PeriodStats,  # noqa: E402,F401
                               RolloutPlan, assignment_bucket, evidence_needed, simulate_rollout)
from mlops_lab.httpkit import (BODY_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_BODY_BYTES, MAX_THREADS,  # noqa: E402
                              BoundedServer, LimitedBodyHandler)
from mlops_lab.router_admin import (TRAFFIC_FIELDS, InvalidField, alarms_from_list, backend_url,  # noqa: E402,F401
                                    known_fields, plan_from_dict, typed)

VARIANTS = ("blue", "green")
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CAPTURE_SCHEMA = 1
ADMIN_TOKEN_ENV = "MLOPS_ROUTER_ADMIN_TOKEN"  # an operator's own token; otherwise each router makes one


# ---- the router process ---------------------------------------------------------------------------------
class BackendUnavailable(Exception):
    """The backend could not be reached or dropped the connection: another replica of the same variant could
    take the request, never the other variant."""


class BackendEjected(BackendUnavailable):
    """The variant's backend is ejected (outlier detection): answered at once, without waiting on it."""


class Ejection:
    """Envoy-style outlier detection for one backend: ``eject_after`` consecutive gateway failures (timeout,
    refused or dropped connection; an HTTP answer, even a 5xx, is not one and resets the count) eject it for
    ``ejection_s`` seconds. Afterwards it is tried again on probation: one more failure ejects it again."""

    def __init__(self, eject_after: int, ejection_s: float):
        self.eject_after, self.ejection_s = eject_after, ejection_s
        self.failures, self.until, self.ejections = 0, 0.0, 0
        self._lock = threading.Lock()

    def ejected(self, now: float) -> bool:
        return now < self.until

    def succeeded(self):
        with self._lock:
            self.failures = 0

    def failed(self, now: float) -> bool:
        """Count a gateway failure; True if it ejects the backend now."""
        with self._lock:
            if self.ejected(now):  # requests that were already waiting when it was ejected
                return False
            self.failures += 1
            if self.failures < self.eject_after:
                return False
            self.failures = self.eject_after - 1  # on probation once the ejection ends
            self.until, self.ejections = now + self.ejection_s, self.ejections + 1
            return True


class _Pools(threading.local):
    """One kept-alive connection per backend per router thread (http.client is not thread-safe)."""

    def __init__(self):
        self.connections: dict[str, http.client.HTTPConnection] = {}


TIMEOUT_S = 5.0     # each request's time budget at its backend
PING_TIMEOUT_S = 0.5  # how long /ping waits for a backend's own /ping (a healthy one answers in milliseconds)
READY = "ready"     # a backend's verdict when its own /ping answered 200 in time
EJECT_AFTER = 3     # consecutive gateway failures that eject a backend (Envoy's consecutive_gateway_failure)
EJECTION_S = 10.0   # how long it stays ejected (Envoy's base_ejection_time)


class Router:
    def __init__(self, blue: str, green: str | None = None, period_s: float = 1.0, timeout_s: float = TIMEOUT_S,
                 capture: str | None = None, capture_sample: float = 0.0, seed: int | None = None,
                 admin_token: str | None = None, eject_after: int = EJECT_AFTER, ejection_s: float = EJECTION_S,
                 shadow_queue_size: int = 1000, capture_queue_size: int = 10000):
        self.admin_token = admin_token or secrets.token_urlsafe(32)  # 256 random bits unless one is given
        self.backends = {"blue": blue.rstrip("/"), "green": (green or "").rstrip("/")}
        self.period_s, self.timeout_s = float(period_s), float(timeout_s)
        self.eject_after, self.ejection_s = int(eject_after), float(ejection_s)
        self.ejection = {v: Ejection(self.eject_after, self.ejection_s) for v in VARIANTS}
        self.green_weight, self.sticky, self.shadow_fraction = 0.0, False, 0.0
        self.salt = ""  # the running A/B experiment's name, mixed into the assignment hash
        self.capture_path, self.capture_sample = capture, float(capture_sample)
        self.deployment: Deployment | None = None
        self.lock = threading.Lock()
        self._random = random.Random(seed)
        self._pools = _Pools()
        self._green_period: list[tuple[float, bool]] = []
        self.events: list[tuple[float, str, float]] = []
        self.counts = {"requests": 0, "unreachable": 0, "ejected": 0, "ejections": 0, "shadowed": 0,
                       "shadow_errors": 0, "shadow_dropped": 0, "capture_dropped": 0}
        self.shadow_pairs: deque = deque(maxlen=20000)  # (blue score, green score) per shadowed row
        # Bounded, so a slow green or disk never holds the request path: what does not fit is dropped, counted.
        self._shadow_queue: queue.Queue = queue.Queue(maxsize=shadow_queue_size)
        self._capture_queue: queue.Queue = queue.Queue(maxsize=capture_queue_size)
        self._stop = threading.Event()
        self._init_metrics()
        self._threads = [threading.Thread(target=target, daemon=True)
                         for target in (self._controller, self._shadow_worker, self._capture_worker)]
        for thread in self._threads:
            thread.start()

    def _init_metrics(self):
        r = self.registry = CollectorRegistry()
        self.m_requests = Counter("router_requests", "Client requests answered", ["variant", "code"], registry=r)
        self.m_latency = Histogram("router_request_duration_seconds", "Time from request to answer",
                                   ["variant"], buckets=LATENCY_BUCKETS, registry=r)
        self.m_prediction = Histogram("router_prediction", "Scores returned to clients", ["variant"],
                                      buckets=SCORE_BUCKETS, registry=r)
        self.m_retries = Counter("router_retries", "Failovers to another replica of the same variant", ["variant"],
                                 registry=r)
        self.m_backend_errors = Counter("router_backend_errors", "Unreachable backend or 5xx", ["variant"],
                                        registry=r)
        self.m_weight = Gauge("router_green_weight", "Share of traffic routed to green", registry=r)
        self.m_alarm = Gauge("router_alarm", "1 while the alarm is in ALARM", ["alarm"], registry=r)
        self.m_rollbacks = Counter("router_rollbacks", "Rollbacks to blue", registry=r)
        self.m_shadow = Counter("router_shadow_requests", "Shadow copies sent to green", ["outcome"], registry=r)
        self.m_shadow_diff = Histogram("router_shadow_abs_diff", "|green - blue| score per shadowed row",
                                       buckets=DIFF_BUCKETS, registry=r)
        self.m_captured = Counter("router_capture_records", "Lines written to the capture file", registry=r)
        self.m_shadow_dropped = Counter("router_shadow_dropped", "Shadow copies dropped: the queue was full",
                                        registry=r)
        self.m_capture_dropped = Counter("router_capture_dropped", "Capture records dropped: the queue was full",
                                         registry=r)
        self.m_model_requests = Counter("router_model_requests", "Client requests answered, per model version",
                                        ["variant", "version"], registry=r)
        self.m_ejections = Counter("router_ejections", "Backends ejected by outlier detection", ["variant"],
                                   registry=r)
        self._latency = {v: self.m_latency.labels(v) for v in VARIANTS}  # label lookups off the hot path
        self._predictions = {v: self.m_prediction.labels(v) for v in VARIANTS}

    def authorized(self, authorization: str | None) -> bool:
        """Does an ``Authorization`` header carry this router's admin token? Compared in constant time, so
        the answer's timing tells an attacker nothing about how much of a guess was right."""
        expected = f"Bearer {self.admin_token}".encode()
        return hmac.compare_digest((authorization or "").encode("utf-8", "replace"), expected)

    # -- routing ------------------------------------------------------------------------------------------
    def choose(self, user_id: str | None, target: str | None) -> str:
        if target in VARIANTS:
            return target
        weight = self.green_weight
        if weight <= 0 or not self.backends["green"]:
            return "blue"
        if weight >= 1:
            return "green"
        if self.sticky and user_id:
            return "green" if assignment_bucket(user_id, self.salt) < weight else "blue"
        return "green" if self._random.random() < weight else "blue"

    def forward(self, variant: str, body: bytes, headers: dict) -> tuple[int, bytes, dict]:
        """POST body to the variant's /invocations, unless outlier detection ejected its backend."""
        ejection = self.ejection[variant]
        if ejection.ejected(time.monotonic()):
            raise BackendEjected(f"{variant} is ejected after {self.eject_after} consecutive timeouts or "
                                 f"connection failures; it is tried again {self.ejection_s:g} s after ejection")
        try:
            answer = self._send_to(variant, body, headers)
        except BackendUnavailable:
            if ejection.failed(time.monotonic()):
                self.m_ejections.labels(variant).inc()
                with self.lock:
                    self.counts["ejections"] += 1
            raise
        ejection.succeeded()
        return answer

    def _send_to(self, variant: str, body: bytes, headers: dict) -> tuple[int, bytes, dict]:
        """POST body over this thread's kept-alive connection, within one timeout budget for the request."""
        base = self.backends[variant]
        if not base:
            raise BackendUnavailable(f"no {variant} backend configured")
        deadline = time.monotonic() + self.timeout_s  # the retry below shares the budget, never doubles it
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile gets one fresh retry
            conn = self._pools.connections.get(base)
            if conn is None:
                parts = urlsplit(base)
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
                self._pools.connections[base] = conn
            budget = max(deadline - time.monotonic(), 0.001)
            conn.timeout = budget
            if conn.sock is not None:
                conn.sock.settimeout(budget)
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                return response.status, payload, {"X-Model-Version": response.getheader("X-Model-Version", "")}
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as error:
                conn.close()
                self._pools.connections.pop(base, None)
                fresh = isinstance(error, (http.client.RemoteDisconnected, BrokenPipeError,
                                           ConnectionResetError)) and attempt == 0
                if not fresh:
                    raise BackendUnavailable(f"{variant} at {base}: {type(error).__name__}: {error}") from error
        raise BackendUnavailable(f"{variant} at {base}: connection dropped twice")

    def handle(self, body: bytes, content_type: str, user_id: str | None, target: str | None):
        """Route one client request; returns (status, body, headers).

        The chosen variant answers or no one does: an unreachable variant gets a 503, never a detour to the
        other variant, which the plan did not give this request (an unjudged canary, a shadow's client, the
        other arm of an A/B test).
        """
        received = time.time()
        start = time.perf_counter()
        request_id = os.urandom(8).hex()
        variant = self.choose(user_id, target)
        headers = {"Content-Type": content_type or "application/json"}
        unreachable = ejected = False
        try:
            status, payload, extra = self.forward(variant, body, headers)
        except BackendUnavailable as error:
            unreachable, status, extra = True, 503, {"X-Model-Version": ""}
            ejected = isinstance(error, BackendEjected)
            payload = json.dumps({"error_code": "VARIANT_UNAVAILABLE",
                                  "message": f"the {variant} variant is unreachable: {error}"}).encode()
        failed = status >= 500
        elapsed = time.perf_counter() - start
        self._record_green(variant, elapsed, failed)
        if failed:
            self.m_backend_errors.labels(variant).inc()
        self.m_requests.labels(variant, str(status)).inc()
        if extra.get("X-Model-Version"):  # answered by a model (not refused by the router): which version
            self.m_model_requests.labels(variant, extra["X-Model-Version"]).inc()
        self._latency[variant].observe(elapsed)
        with self.lock:
            self.counts["requests"] += 1
            self.counts["unreachable"] += unreachable
            self.counts["ejected"] += ejected
        scores = _scores(payload) if status == 200 else []
        predictions = self._predictions[variant]
        for score in scores:
            predictions.observe(score)
        if status == 200 and variant == "blue" and self.shadow_fraction > 0 and \
                self._random.random() < self.shadow_fraction:
            try:
                self._shadow_queue.put_nowait((received, request_id, body, headers, scores, user_id))
            except queue.Full:
                self._dropped("shadow_dropped", self.m_shadow_dropped)
        if self.capture_path and self.capture_sample > 0 and self._random.random() < self.capture_sample:
            self._capture(received, request_id, variant, False, status, elapsed, user_id,
                          extra.get("X-Model-Version", ""), body, scores)
        out_headers = {"X-Variant": variant, "X-Request-Id": request_id,
                       "X-Model-Version": extra.get("X-Model-Version", "")}
        return status, payload, out_headers

    def _record_green(self, variant: str, latency: float, failed: bool):
        if variant == "green":
            with self.lock:
                self._green_period.append((latency, failed))

    # -- readiness (/ping) -------------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Is the router ready for traffic (SageMaker's /ping)? Only if a backend that may receive traffic -- blue
        while green's weight < 1, green while its weight > 0, and not ejected by outlier detection -- answers its
        own /ping with a 200 within ``PING_TIMEOUT_S``. Returns (ready, each variant's verdict: ``READY`` or why not)."""
        now = time.monotonic()
        with self.lock:
            backends, green_weight = dict(self.backends), self.green_weight
        verdicts, candidates = {}, {}
        for variant in VARIANTS:
            if not backends[variant]:
                verdicts[variant] = "no backend configured"
            elif variant == "green" and green_weight <= 0:
                verdicts[variant] = "receives no traffic (green_weight 0): not probed"
            elif variant == "blue" and green_weight >= 1 and backends["green"]:
                verdicts[variant] = "receives no traffic (green_weight 1): not probed"
            elif self.ejection[variant].ejected(now):
                verdicts[variant] = "ejected by outlier detection: not probed"
            else:
                candidates[variant] = backends[variant]
        verdicts.update(ping_backends(candidates, PING_TIMEOUT_S))
        return any(verdicts[variant] == READY for variant in candidates), verdicts

    # -- the deployment controller ---------------------------------------------------------------------
    def deploy(self, plan: RolloutPlan, alarms: tuple[Alarm, ...]):
        with self.lock:
            self._green_period = []
            self.deployment = Deployment(plan, tuple(alarms), started=time.time())
            self.events = self.deployment.events
            self.sticky, self.shadow_fraction = False, 0.0
            self.green_weight = self.deployment.weight
            self.m_weight.set(self.green_weight)

    def _controller(self):
        while not self._stop.wait(self.period_s):
            self._control_step()

    def _control_step(self):
        """One evaluation period. The tick and the write of its weight hold the lock together: an operator's
        rollback or traffic change lands before the tick (which then sees a finished deployment) or after
        it, never in between, where the tick's older weight would overwrite it."""
        with self.lock:
            samples, self._green_period = self._green_period, []
            deployment = self.deployment
            if deployment is None or deployment.done:
                return
            weight = deployment.tick(time.time(), PeriodStats.from_samples(samples))
            self.green_weight = weight
            self.m_weight.set(weight)  # under the lock too: the gauge never shows a weight an operator replaced
            alarm_state = dict(deployment.alarm_state)
            rolled_back = deployment.phase == "rolled_back"
        for name, on in alarm_state.items():
            self.m_alarm.labels(name).set(int(on))
        if rolled_back:
            self.m_rollbacks.inc()

    def set_traffic(self, green_weight=None, sticky=None, shadow_fraction=None, capture_sample=None, salt=None):
        """Change how traffic is split; a running deployment is stopped. Every value is checked first
        (:class:`InvalidField` names a bad one), so a refused call changes nothing."""
        given = {"green_weight": green_weight, "sticky": sticky, "shadow_fraction": shadow_fraction,
                 "capture_sample": capture_sample, "salt": salt}
        changes = {name: TRAFFIC_FIELDS[name](name, value) for name, value in given.items() if value is not None}
        with self.lock:
            if self.deployment is not None and not self.deployment.done:
                self.deployment.phase = "rolled_back"  # a manual change ends a running deployment
                self.deployment.events.append((time.time(), "deployment stopped by an operator", 0.0))
            for name, value in changes.items():
                setattr(self, name, value)
            self.m_weight.set(self.green_weight)

    def set_backends(self, **urls: str):
        """Point variants at other servers (``blue=..., green=...``), all checked before any changes."""
        known_fields(urls, VARIANTS)
        checked = {variant: backend_url(variant, url) for variant, url in urls.items()}
        with self.lock:
            self.backends.update(checked)
            for variant in checked:  # a new server starts with a clean record
                self.ejection[variant] = Ejection(self.eject_after, self.ejection_s)

    def rollback(self, reason: str = "manual rollback"):
        with self.lock:
            if self.deployment is not None and not self.deployment.done:
                self.deployment.phase = "rolled_back"
            self.events.append((time.time(), reason, 0.0))
            self.green_weight, self.sticky = 0.0, False
            self.m_weight.set(0.0)
        self.m_rollbacks.inc()

    def switch(self):
        """The blue/green switch: green takes all traffic in one atomic assignment."""
        with self.lock:
            self.green_weight, self.sticky = 1.0, False
            self.events.append((time.time(), "blue/green switch: green is live", 1.0))
            self.m_weight.set(1.0)

    def shadow_scores(self) -> dict:
        """Both variants' scores for the rows shadowed so far (the newest 20,000): the challenger's own score
        distribution on live traffic, which its canary is later judged against (:func:`mlops_lab.canary.judge`)."""
        with self.lock:
            pairs = list(self.shadow_pairs)
        return {"blue": [b for b, _ in pairs], "green": [g for _, g in pairs]}

    def state(self) -> dict:
        with self.lock:
            d = self.deployment
            pairs = list(self.shadow_pairs)
            return {
                "backends": dict(self.backends), "green_weight": self.green_weight, "sticky": self.sticky,
                "salt": self.salt, "shadow_fraction": self.shadow_fraction, "capture_sample": self.capture_sample,
                "period_s": self.period_s, "counts": dict(self.counts),
                "deployment": None if d is None else {
                    "plan": asdict(d.plan), "alarms": [asdict(a) for a in d.alarms], "phase": d.phase,
                    "step": d.step, "alarm_state": dict(d.alarm_state), "step_requests": d.step_requests,
                    "min_green_requests": d.min_green_requests},
                "events": [{"t": t, "event": e, "green_weight": w} for t, e, w in self.events],
                "shadow": _shadow_summary(pairs, self.counts["shadowed"], self.counts["shadow_errors"]),
            }

    # -- shadow and capture, off the request path ---------------------------------------------------------
    def _shadow_worker(self):
        while not self._stop.is_set():
            try:
                received, request_id, body, headers, blue_scores, user_id = self._shadow_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            start = time.perf_counter()
            try:
                status, payload, extra = self.forward("green", body, headers)
            except BackendUnavailable:
                status, payload, extra = 503, b"", {"X-Model-Version": ""}
            elapsed = time.perf_counter() - start
            green_scores = _scores(payload) if status == 200 else []
            ok = status == 200 and len(green_scores) == len(blue_scores)
            self.m_shadow.labels("ok" if ok else "error").inc()
            with self.lock:
                self.counts["shadowed"] += 1
                self.counts["shadow_errors"] += not ok
                if ok:
                    self.shadow_pairs.extend(zip(blue_scores, green_scores))
            for b, g in zip(blue_scores, green_scores) if ok else ():
                self.m_shadow_diff.observe(abs(g - b))
            if self.capture_path:
                self._capture(received, request_id, "green", True, status, elapsed, user_id,
                              extra.get("X-Model-Version", ""), body, green_scores)

    def _capture(self, ts, request_id, variant, shadow, status, elapsed, user_id, version, body, scores):
        try:
            self._capture_queue.put_nowait({"schema": CAPTURE_SCHEMA, "ts": ts, "request_id": request_id,
                                            "variant": variant, "shadow": shadow, "status": status,
                                            "latency_ms": round(elapsed * 1e3, 3), "user_id": user_id,
                                            "model_version": version, "body": body, "predictions": scores})
        except queue.Full:
            self._dropped("capture_dropped", self.m_capture_dropped)

    def _dropped(self, count: str, metric: Counter):
        with self.lock:
            self.counts[count] += 1
        metric.inc()

    def _capture_worker(self):
        while not (self._stop.is_set() and self._capture_queue.empty()):  # on close, drain before exiting
            try:
                record = self._capture_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [record]
            while len(batch) < 500:
                try:
                    batch.append(self._capture_queue.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for rec in batch:
                rec["inputs"] = rows_of(rec.pop("body"))
                lines.append(json.dumps(rec, default=str))
            with open(self.capture_path, "a") as f:
                f.write("\n".join(lines) + "\n")
            self.m_captured.inc(len(lines))

    def close(self, timeout_s: float = 5.0):
        """Stop the background threads; captured records still queued are written first."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)


def ping_backend(base: str, timeout_s: float) -> str:
    """GET ``base``/ping on a fresh connection: ``READY`` if it answers 200 within ``timeout_s``, else why not."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        response.read()
        return READY if response.status == 200 else f"its /ping answered {response.status}"
    except TimeoutError:  # socket.timeout
        return f"no answer to /ping within {timeout_s:g} s"
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        conn.close()


def ping_backends(bases: dict[str, str], timeout_s: float) -> dict[str, str]:
    """Probe the backends at once (two hung ones cost one timeout, not two); stop at the first ``READY``.
    Returns {variant: verdict}; a probe not finished within ``timeout_s`` is "no answer"."""
    verdicts: queue.Queue = queue.Queue()
    for variant, base in bases.items():
        threading.Thread(target=lambda v=variant, b=base: verdicts.put((v, ping_backend(b, timeout_s))),
                         daemon=True).start()
    found = {variant: f"no answer to /ping within {timeout_s:g} s" for variant in bases}
    deadline = time.monotonic() + timeout_s
    for _ in bases:
        try:
            variant, verdict = verdicts.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            break
        found[variant] = verdict
        if verdict == READY:
            break
    return found


def rows_of(body: bytes) -> list[dict]:
    """The rows of an MLflow JSON payload as ``{column: value}`` records, whatever its form ([] if none)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("dataframe_split"), dict):
        split = data["dataframe_split"]
        return [dict(zip(split.get("columns", []), row)) for row in split.get("data", [])]
    if isinstance(data.get("dataframe_records"), list):
        return [row for row in data["dataframe_records"] if isinstance(row, dict)]
    for key in ("inputs", "instances"):
        value = data.get(key)
        if isinstance(value, dict):
            columns = list(value)
            return [dict(zip(columns, row)) for row in zip(*(value[c] if isinstance(value[c], list)
                                                             else [value[c]] for c in columns))]
        if isinstance(value, list):
            return [row for row in value if isinstance(row, dict)]
    return []


def _scores(payload: bytes) -> list[float]:
    try:
        predictions = json.loads(payload).get("predictions", [])
        return [float(p) for p in predictions if isinstance(p, (int, float))]
    except (ValueError, AttributeError, TypeError):
        return []


def _shadow_summary(pairs, shadowed, errors) -> dict:
    if not pairs:
        return {"shadowed": shadowed, "errors": errors, "rows": 0}
    diffs = [abs(g - b) for b, g in pairs]
    agree = sum((b >= 0.5) == (g >= 0.5) for b, g in pairs)
    return {"shadowed": shadowed, "errors": errors, "rows": len(pairs),
            "mean_abs_diff": sum(diffs) / len(diffs), "max_abs_diff": max(diffs),
            "decision_agreement": agree / len(pairs)}


# ---- HTTP ---------------------------------------------------------------------------------------------
ROUTES = {"/invocations": ("POST",), "/ping": ("GET", "HEAD"), "/health": ("GET", "HEAD"), "/live": ("GET", "HEAD"),
          "/metrics": ("GET",), "/admin/state": ("GET",), "/admin/shadow-scores": ("GET",)}


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods a route takes (every other ``/admin/...`` path is an admin action: POST), None if no route."""
    return ROUTES.get(path) or (("POST",) if path.startswith("/admin/") else None)


class _Handler(LimitedBodyHandler):
    """Bounded bodies, idle connections closed, TCP_NODELAY: :class:`mlops_lab.httpkit.LimitedBodyHandler`."""

    router: Router

    def log_message(self, format, *args):
        pass

    def _send(self, status, body: bytes, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer carries the headers of the GET answer, never its body
            self.wfile.write(body)

    def _json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _method_refused(self, path: str) -> bool:
        """Answer 404 (no such route) or 405 with ``Allow`` (the route takes other methods); False if allowed."""
        allowed = allowed_methods(path)
        if allowed is None:
            self._json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no route {self.command} {path}"})
        elif self.command not in allowed:
            self._json(405, {"error_code": "METHOD_NOT_ALLOWED",
                             "message": f"{path} does not take {self.command}; allowed: {', '.join(allowed)}"},
                       headers={"Allow": ", ".join(allowed)})
        else:
            return False
        return True

    def _unauthorized(self, path: str) -> bool:
        """Answer 401 to an admin call without the router's token; False if the call may go on."""
        if not path.startswith("/admin/") or self.router.authorized(self.headers.get("Authorization")):
            return False
        self._json(401, {"error_code": "UNAUTHENTICATED",
                         "message": "the admin API needs the header 'Authorization: Bearer <the router's token>'"},
                   headers={"WWW-Authenticate": 'Bearer realm="router admin"'})
        return True

    def _refuse(self):
        """PUT, DELETE, PATCH: no route takes them (the body is read first, so the connection stays usable)."""
        if self.read_body() is not None:
            self._method_refused(self.path.split("?")[0])

    do_PUT = do_DELETE = do_PATCH = _refuse

    def _health(self, path: str):
        """/live: the router serves (200, whatever the backends). /ping and /health: readiness (200 or 503)."""
        if path == "/live":
            return self._send(200, b"\n")
        ready, backends = self.router.readiness()
        if ready:
            return self._send(200, b"\n")
        self._json(503, {"error_code": "NOT_READY", "backends": backends,
                         "message": f"no backend that may receive traffic answered its /ping within "
                                    f"{PING_TIMEOUT_S:g} s"})

    def do_HEAD(self):
        path = self.path.split("?")[0]
        if not self._method_refused(path):
            self._health(path)  # only /ping, /health and /live take HEAD

    def do_GET(self):
        path = self.path.split("?")[0]
        if self._method_refused(path) or self._unauthorized(path):
            return
        if path in ("/ping", "/health", "/live"):
            self._health(path)
        elif path == "/metrics":
            self._send(200, generate_latest(self.router.registry), CONTENT_TYPE_LATEST)
        elif path == "/admin/shadow-scores":
            self._json(200, self.router.shadow_scores())
        else:
            self._json(200, self.router.state())

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self.read_body()
        if body is None or self._method_refused(path) or self._unauthorized(path):
            return
        if path == "/invocations":
            if not body:
                return self._json(400, {"error_code": "BAD_REQUEST", "message": "empty request body"})
            status, payload, headers = self.router.handle(body, self.headers.get("Content-Type", ""),
                                                          self.headers.get("X-User-Id"),
                                                          self.headers.get("X-Target-Variant"))
            return self._send(status, payload, "application/json", headers)
        try:
            spec = json.loads(body or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("expected a JSON object")
            self._admin(path, spec)
        except InvalidField as error:
            return self._json(400, {"error_code": "INVALID_PARAMETER_VALUE", "field": error.field,
                                    "message": str(error)})
        except (ValueError, TypeError, KeyError) as error:
            return self._json(400, {"error_code": "BAD_REQUEST", "message": f"{type(error).__name__}: {error}"})
        self._json(200, self.router.state())

    def _admin(self, path: str, spec: dict):
        """One admin action. Every field is checked (unknown ones too) before the router changes at all."""
        router = self.router
        if path == "/admin/traffic":
            known_fields(spec, tuple(TRAFFIC_FIELDS))
            router.set_traffic(**spec)
        elif path == "/admin/deploy":
            alarms = alarms_from_list(spec.get("alarms", []))
            router.deploy(plan_from_dict({k: v for k, v in spec.items() if k != "alarms"}), alarms)
        elif path == "/admin/rollback":
            known_fields(spec, ("reason",))
            router.rollback(typed(str, "string")("reason", spec.get("reason", "manual rollback")))
        elif path == "/admin/switch":
            known_fields(spec, ())
            router.switch()
        elif path == "/admin/backends":
            known_fields(spec, VARIANTS)
            router.set_backends(**spec)
        else:
            raise KeyError(f"no admin route {path}")


def router_command(blue: str, green: str = "", *, period_s: float = 1.0, capture: str | None = None,
                   capture_sample: float = 0.1, seed: int | None = None, python: str | None = None,
                   admin_token_file: str | os.PathLike | None = None, timeout_s: float | None = None,
                   eject_after: int | None = None, ejection_s: float | None = None) -> list[str]:
    """The command that starts a router on ``{port}`` (for :class:`mlops_lab.servers.BackgroundServer`).

    It runs this file as a script, so it starts whether or not the package is installed (a Colab kernel
    that put the course on ``sys.path``); the router and its two sibling modules need only the standard
    library and prometheus_client (the package's ``__init__`` imports nothing until asked: no NumPy, pandas).
    A ``seed`` makes the random choices (canary split, shadow and capture sampling) repeatable.

    The admin API needs the router's token: the router writes it to ``admin_token_file`` (mode 0600) before
    it serves, so once :class:`~mlops_lab.servers.BackgroundServer` has started it,
    ``read_admin_token(admin_token_file)`` gives it to the caller. The token never goes into the command line
    (``ps`` shows it to every user of the machine), a URL or the log. Without a file, only an operator who
    set ``MLOPS_ROUTER_ADMIN_TOKEN`` in the router's environment can use the admin API.

    Wait for the router with ``health_path="/ping"`` when its blue is already up (it answers 200 only once a
    backend answers), with ``health_path="/live"`` when the router starts before its backends.
    """
    command = [python or sys.executable, os.path.abspath(__file__), "--blue", blue, "--green", green or "",
               "--port", "{port}", "--period", str(period_s)]
    if capture:
        command += ["--capture", str(capture), "--capture-sample", str(capture_sample)]
    if seed is not None:
        command += ["--seed", str(seed)]
    if admin_token_file is not None:
        command += ["--admin-token-file", os.fspath(admin_token_file)]
    for flag, value in (("--timeout", timeout_s), ("--eject-after", eject_after), ("--ejection-s", ejection_s)):
        if value is not None:
            command += [flag, str(value)]
    return command


# ---- the admin API's clients ------------------------------------------------------------------------------
def write_admin_token(path: str | os.PathLike, token: str) -> None:
    """Write the token readable by its owner only: created 0600, and an older file is narrowed first."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(token + "\n")


def read_admin_token(path: str | os.PathLike) -> str:
    return Path(path).read_text().strip()


def admin_call(url: str, method: str, path: str, token: str, body: bytes | None = None,
               timeout: float = 10) -> tuple[int, dict]:
    """One admin call with the token in the ``Authorization`` header: (status, JSON answer)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def admin_post(url: str, action: str, token: str, **fields) -> tuple[int, dict]:
    """``POST /admin/<action>`` with ``fields`` as its JSON body: (status, answer), e.g.
    ``admin_post(router.url, "traffic", token, green_weight=0.1)``."""
    return admin_call(url, "POST", f"/admin/{action}", token, json.dumps(fields).encode())


def admin_state(url: str, token: str) -> dict:
    """``GET /admin/state``; raises if the router refuses."""
    status, answer = admin_call(url, "GET", "/admin/state", token)
    if status != 200:
        raise RuntimeError(f"router refused /admin/state ({status}): {answer}")
    return answer


def make_server(router: Router, port: int, host: str = "127.0.0.1", *, idle_timeout_s: float = IDLE_TIMEOUT_S,
                body_timeout_s: float = BODY_TIMEOUT_S, max_body_bytes: int = MAX_BODY_BYTES,
                max_threads: int = MAX_THREADS) -> ThreadingHTTPServer:
    """The router's HTTP server: the kernel's full backlog, at most ``max_threads`` handler threads,
    connections idle for ``idle_timeout_s`` closed, bodies bounded (:mod:`mlops_lab.httpkit`)."""
    handler = type("Handler", (_Handler,), {"router": router, "timeout": idle_timeout_s,
                                            "body_timeout_s": body_timeout_s, "max_body_bytes": max_body_bytes})
    return BoundedServer((host, port), handler, max_threads=max_threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Route traffic between a blue and a green model server.")
    parser.add_argument("--blue", required=True, help="base URL of the champion's server")
    parser.add_argument("--green", default="", help="base URL of the challenger's server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--period", type=float, default=1.0, help="alarm evaluation period in seconds")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="each request's time budget at a backend (s)")
    parser.add_argument("--eject-after", type=int, default=EJECT_AFTER,
                        help="consecutive timeouts or connection failures that eject a backend")
    parser.add_argument("--ejection-s", type=float, default=EJECTION_S, help="how long a backend stays ejected (s)")
    parser.add_argument("--capture", default=None, help="append sampled requests to this JSON-lines file")
    parser.add_argument("--capture-sample", type=float, default=0.1, help="share of requests captured")
    parser.add_argument("--seed", type=int, default=None, help="seed for traffic splits and sampling")
    parser.add_argument("--admin-token-file", default=None,
                        help=f"write the admin token here (mode 0600); ${ADMIN_TOKEN_ENV} gives one, else random")
    args = parser.parse_args(argv)
    router = Router(args.blue, args.green, period_s=args.period, timeout_s=args.timeout,
                    capture=args.capture, capture_sample=args.capture_sample if args.capture else 0.0, seed=args.seed,
                    admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None, eject_after=args.eject_after,
                    ejection_s=args.ejection_s)
    if args.admin_token_file:  # before the port opens: a caller that saw /live or /ping answer can read it
        write_admin_token(args.admin_token_file, router.admin_token)
    server = make_server(router, args.port, args.host)
    print(f"router on http://{args.host}:{args.port}: blue={args.blue} green={args.green or '-'}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        router.close()
        server.server_close()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
