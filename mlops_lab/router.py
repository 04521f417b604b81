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
  a bake rolls all traffic back to blue; a deployment that survives its final bake ends with the
  **blue/green switch**, green taking 100 % in one atomic step.

The deployment logic is a pure state machine (:class:`Deployment` with :class:`RolloutPlan` and
:class:`Alarm`), driven here by the router's clock and by :func:`simulate_rollout` in a fast offline
simulation: the chapter's widget runs the very same code.

Retry policy: a request whose backend cannot be reached (connection refused or reset, timeout) is retried
once on the other variant, so a dead green costs no client request; the failure still counts as a green
error for the alarms. An HTTP answer (even a 5xx) is passed to the client as it is, never retried.

Admin API (JSON): ``GET /admin/state``; ``POST /admin/traffic`` ``{"green_weight", "sticky", "salt",
"shadow_fraction", "capture_sample"}``; ``POST /admin/deploy`` ``{"strategy", "canary_size", "step_size",
"bake_s", "final_bake_s", "alarms": [{"metric", "threshold", ...}]}``; ``POST /admin/rollback``;
``POST /admin/switch`` (green takes 100 % at once); ``POST /admin/backends`` ``{"blue", "green"}``.

Prometheus metrics (``GET /metrics``), names kept stable for the monitoring chapter:

====================================  =========  ======================================================
metric                                type       labels / meaning
====================================  =========  ======================================================
``router_requests_total``             counter    ``variant``, ``code``: client requests answered
``router_request_duration_seconds``   histogram  ``variant``: time from request received to answer sent
``router_prediction``                 histogram  ``variant``: each score returned to a client
``router_retries_total``              counter    ``variant``: failed backend the retry came from
``router_backend_errors_total``       counter    ``variant``: unreachable backend or 5xx
``router_green_weight``               gauge      share of traffic routed to green now
``router_alarm``                      gauge      ``alarm``: 1 while the alarm is in ALARM
``router_rollbacks_total``            counter    automatic and manual rollbacks
``router_shadow_requests_total``      counter    ``outcome``: ok or error (copies sent to green)
``router_shadow_abs_diff``            histogram  |green score - blue score| per shadowed row
``router_capture_records_total``      counter    lines written to the capture file
====================================  =========  ======================================================

Data capture (``--capture PATH``): a share ``--capture-sample`` of requests (chosen at random) is appended
to PATH as JSON lines, one object per request, written by a background thread off the request path.
Schema version 1 (stable; new keys may be added, none removed or renamed):

====================  ===============  =================================================================
key                   type             meaning
====================  ===============  =================================================================
``schema``            int              1
``ts``                float            Unix time (s) the router received the request
``request_id``        str              unique id (also sent back as ``X-Request-Id``)
``variant``           str              ``blue`` or ``green``: the variant that answered
``shadow``            bool             true for the shadow copy sent to green (the client saw blue's)
``status``            int              HTTP status of the answer (502: no backend reachable)
``latency_ms``        float            time in the router, or green's time for a shadow copy
``user_id``           str or null      the request's ``X-User-Id`` header
``model_version``     str              the backend's ``X-Model-Version`` header ('' if none)
``inputs``            list of objects  the request's rows as ``{column: value}`` records (any payload form)
``predictions``       list of floats   the scores returned (empty on an error)
====================  ===============  =================================================================
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import queue
import random
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

VARIANTS = ("blue", "green")
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CAPTURE_SCHEMA = 1
STRATEGIES = ("all_at_once", "canary", "linear")


# ---- the A/B assignment: pure, shared by the router and the analysis (mlops_lab.canary.assign_arms) ------
def assignment_bucket(unit: str, salt: str = "") -> float:
    """Where ``unit`` (a user or applicant id) falls in [0, 1) in the experiment named by ``salt``.

    A hash, not a random draw: the same unit always gets the same bucket within one experiment (sticky), and
    the analysis can recompute every assignment. The salt makes experiments independent: without one, every
    experiment would put the same units in its treatment arm (carry-over from the last experiment, and any
    quirk of the hash would bias every test alike). ``sticky`` routing sends a unit to green when its bucket
    is below ``green_weight``.
    """
    digest = hashlib.blake2b(f"{salt}:{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


# ---- the guardrail policy: pure, shared by the router and the simulation --------------------------------
@dataclass(frozen=True)
class Alarm:
    """A CloudWatch-style alarm on green's traffic: ALARM when at least ``datapoints_to_alarm`` of the last
    ``evaluation_periods`` periods breach ``threshold``.

    ``metric`` is ``error_rate`` (5xx or unreachable, as a share of green's requests) or ``p99_latency``
    (seconds). A period with fewer than ``min_requests`` green requests is *missing data* and does not breach.
    """

    metric: str
    threshold: float
    evaluation_periods: int = 3
    datapoints_to_alarm: int = 2
    min_requests: int = 5

    def __post_init__(self):
        if self.metric not in ("error_rate", "p99_latency"):
            raise ValueError(f"Alarm.metric must be 'error_rate' or 'p99_latency', got {self.metric!r}")
        if not 1 <= self.datapoints_to_alarm <= self.evaluation_periods:
            raise ValueError("need 1 <= datapoints_to_alarm <= evaluation_periods")

    @property
    def name(self) -> str:
        return f"{self.metric}>{self.threshold:g}"

    def datapoint(self, stats: "PeriodStats") -> float | None:
        if stats.requests < self.min_requests:
            return None
        return stats.error_rate if self.metric == "error_rate" else stats.p99_latency


@dataclass(frozen=True)
class PeriodStats:
    """What green did during one evaluation period."""

    requests: int
    errors: int
    p99_latency: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def from_samples(cls, samples: list[tuple[float, bool]]) -> "PeriodStats":
        """``samples``: (latency in seconds, failed) for each green request of the period."""
        if not samples:
            return cls(0, 0, 0.0)
        latencies = sorted(latency for latency, _ in samples)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        return cls(len(samples), sum(failed for _, failed in samples), p99)


@dataclass(frozen=True)
class RolloutPlan:
    """How traffic moves to green, as SageMaker's blue/green traffic-routing configuration.

    ``all_at_once``: 100 % at once. ``canary``: ``canary_size`` first, then the rest. ``linear``:
    ``step_size`` more at each step. Each step is followed by a bake of ``bake_s`` seconds; the last step
    (100 %) by ``final_bake_s``. Then the blue/green switch makes green the live model.
    """

    strategy: str = "canary"
    canary_size: float = 0.1
    step_size: float = 0.25
    bake_s: float = 2.0
    final_bake_s: float = 2.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0 < self.canary_size < 1 or not 0 < self.step_size <= 1:
            raise ValueError("need 0 < canary_size < 1 and 0 < step_size <= 1")
        if self.bake_s < 0 or self.final_bake_s < 0:
            raise ValueError("bake times must be >= 0")

    def steps(self) -> list[tuple[float, float]]:
        """(green weight, bake seconds) for each step, the last one at 100 %."""
        if self.strategy == "all_at_once":
            weights = [1.0]
        elif self.strategy == "canary":
            weights = [self.canary_size, 1.0]
        else:
            n = int(round(1 / self.step_size + 0.4999))
            weights = [min(1.0, round(self.step_size * (i + 1), 6)) for i in range(n)]
        return [(w, self.final_bake_s if w >= 1.0 else self.bake_s) for w in weights]

    def duration_s(self) -> float:
        return sum(bake for _, bake in self.steps())


@dataclass
class Deployment:
    """The deployment state machine: call :meth:`tick` once per evaluation period with green's stats.

    ``phase`` goes ``baking`` (step by step) then ``promoted`` (the switch), or ``rolled_back`` the moment
    any alarm is in ALARM. ``events`` records (time, what happened, green weight) for timelines.
    """

    plan: RolloutPlan
    alarms: tuple[Alarm, ...] = ()
    started: float = 0.0
    step: int = 0
    phase: str = "baking"
    step_started: float = 0.0
    history: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    alarm_state: dict = field(default_factory=dict)

    def __post_init__(self):
        self.step_started = self.started
        self.history = {alarm.name: deque(maxlen=alarm.evaluation_periods) for alarm in self.alarms}
        self.alarm_state = {alarm.name: False for alarm in self.alarms}
        self.events.append((self.started, f"step 1: green at {self.weight:.0%}", self.weight))

    @property
    def weight(self) -> float:
        if self.phase == "rolled_back":
            return 0.0
        if self.phase == "promoted":
            return 1.0
        return self.plan.steps()[self.step][0]

    @property
    def done(self) -> bool:
        return self.phase in ("promoted", "rolled_back")

    def tick(self, now: float, stats: PeriodStats) -> float:
        """Evaluate the alarms on one period of green's traffic, then advance; returns the green weight."""
        if self.done:
            return self.weight
        for alarm in self.alarms:
            value = alarm.datapoint(stats)
            self.history[alarm.name].append(value is not None and value > alarm.threshold)
            if sum(self.history[alarm.name]) >= alarm.datapoints_to_alarm:
                self.alarm_state[alarm.name] = True
        fired = [name for name, on in self.alarm_state.items() if on]
        if fired:
            self.phase = "rolled_back"
            self.events.append((now, f"ALARM {', '.join(fired)}: rolled back to blue", 0.0))
            return 0.0
        steps = self.plan.steps()
        if now - self.step_started >= steps[self.step][1] - 1e-9:
            if self.step == len(steps) - 1:
                self.phase = "promoted"
                self.events.append((now, "bake passed: blue/green switch, green is live", 1.0))
            else:
                self.step += 1
                self.step_started = now
                self.events.append((now, f"step {self.step + 1}: green at {self.weight:.0%}", self.weight))
        return self.weight


def simulate_rollout(plan: RolloutPlan, alarms: tuple[Alarm, ...], *, green_error_rate: float = 0.0,
                     green_latency_s: float = 0.005, blue_latency_s: float = 0.005, rps: float = 100.0,
                     period_s: float = 1.0, seed: int = 0, max_s: float = 120.0) -> dict:
    """Run :class:`Deployment` against simulated traffic (Poisson arrivals, random errors, jittered latency).

    Returns the outcome (``promoted``/``rolled_back``), when, how many client requests failed, and a
    per-period timeline. Fast (no HTTP): the chapter's widget calls it on every knob move.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    deployment = Deployment(plan, tuple(alarms), started=0.0)
    timeline, failed, green_total, now = [], 0, 0, 0.0
    while not deployment.done and now < max_s:
        weight = deployment.weight
        n = rng.poisson(rps * period_s)
        n_green = rng.binomial(n, weight)
        errors = rng.binomial(n_green, green_error_rate)
        latencies = green_latency_s * rng.lognormal(0.0, 0.25, n_green)
        samples = [(float(lat), i < errors) for i, lat in enumerate(latencies)]
        now += period_s
        stats = PeriodStats.from_samples(samples)
        failed += errors
        green_total += n_green
        timeline.append({"t": now, "weight": weight, "requests": int(n), "green_requests": int(n_green),
                         "errors": int(errors), "green_p99_ms": stats.p99_latency * 1e3})
        deployment.tick(now, stats)
    return {"outcome": deployment.phase, "ended_s": now, "client_errors": failed, "green_requests": green_total,
            "events": deployment.events, "timeline": timeline}


def alarm_from_dict(spec: dict) -> Alarm:
    return Alarm(**{k: spec[k] for k in ("metric", "threshold", "evaluation_periods", "datapoints_to_alarm",
                                          "min_requests") if k in spec})


# ---- the router process ---------------------------------------------------------------------------------
def _fraction(name: str, value) -> float:
    """``value`` as a float in [0, 1], or a ValueError that names the setting (the admin API answers 400)."""
    if not 0 <= float(value) <= 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return float(value)


class BackendUnavailable(Exception):
    """The backend could not be reached or dropped the connection: safe to retry elsewhere."""


class _Pools(threading.local):
    """One kept-alive connection per backend per router thread (http.client is not thread-safe)."""

    def __init__(self):
        self.connections: dict[str, http.client.HTTPConnection] = {}


class Router:
    def __init__(self, blue: str, green: str | None = None, period_s: float = 1.0, timeout_s: float = 5.0,
                 capture: str | None = None, capture_sample: float = 0.0, seed: int | None = None):
        self.backends = {"blue": blue.rstrip("/"), "green": (green or "").rstrip("/")}
        self.period_s, self.timeout_s = float(period_s), float(timeout_s)
        self.green_weight, self.sticky, self.shadow_fraction = 0.0, False, 0.0
        self.salt = ""  # the running A/B experiment's name, mixed into the assignment hash
        self.capture_path, self.capture_sample = capture, float(capture_sample)
        self.deployment: Deployment | None = None
        self.lock = threading.Lock()
        self._random = random.Random(seed)
        self._pools = _Pools()
        self._green_period: list[tuple[float, bool]] = []
        self.events: list[tuple[float, str, float]] = []
        self.counts = {"requests": 0, "lost": 0, "retried": 0, "shadowed": 0, "shadow_errors": 0}
        self.shadow_pairs: deque = deque(maxlen=20000)  # (blue score, green score) per shadowed row
        self._shadow_queue: queue.Queue = queue.Queue(maxsize=1000)
        self._capture_queue: queue.Queue = queue.Queue(maxsize=10000)
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
        self.m_retries = Counter("router_retries", "Requests retried, by the variant that failed", ["variant"],
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
        self._latency = {v: self.m_latency.labels(v) for v in VARIANTS}  # label lookups off the hot path
        self._predictions = {v: self.m_prediction.labels(v) for v in VARIANTS}

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
        """POST body to the variant's /invocations over this thread's kept-alive connection."""
        base = self.backends[variant]
        if not base:
            raise BackendUnavailable(f"no {variant} backend configured")
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile gets one fresh retry
            conn = self._pools.connections.get(base)
            if conn is None:
                parts = urlsplit(base)
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
                self._pools.connections[base] = conn
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
        """Route one client request; returns (status, body, headers)."""
        received = time.time()
        start = time.perf_counter()
        request_id = os.urandom(8).hex()
        variant = self.choose(user_id, target)
        headers = {"Content-Type": content_type or "application/json"}
        retried = False
        try:
            status, payload, extra = self.forward(variant, body, headers)
            failed = status >= 500
        except BackendUnavailable:
            self._record_green(variant, time.perf_counter() - start, True)
            self.m_backend_errors.labels(variant).inc()
            self.m_retries.labels(variant).inc()
            with self.lock:
                self.counts["retried"] += 1
            retried, variant = True, ("green" if variant == "blue" else "blue")
            try:
                status, payload, extra = self.forward(variant, body, headers)
                failed = status >= 500
            except BackendUnavailable as error:
                status, failed, extra = 502, True, {"X-Model-Version": ""}
                payload = json.dumps({"error_code": "BAD_GATEWAY", "message": f"no backend reachable: {error}"}
                                     ).encode()
        elapsed = time.perf_counter() - start
        if not retried:
            self._record_green(variant, elapsed, failed)
        if failed:
            self.m_backend_errors.labels(variant).inc()
        self.m_requests.labels(variant, str(status)).inc()
        self._latency[variant].observe(elapsed)
        with self.lock:
            self.counts["requests"] += 1
            self.counts["lost"] += status == 502
        scores = _scores(payload) if status == 200 else []
        predictions = self._predictions[variant]
        for score in scores:
            predictions.observe(score)
        if status == 200 and variant == "blue" and self.shadow_fraction > 0 and \
                self._random.random() < self.shadow_fraction:
            try:
                self._shadow_queue.put_nowait((received, request_id, body, headers, scores, user_id))
            except queue.Full:
                pass
        if self.capture_path and self.capture_sample > 0 and self._random.random() < self.capture_sample:
            self._capture(received, request_id, variant, False, status, elapsed, user_id,
                          extra.get("X-Model-Version", ""), body, scores)
        out_headers = {"X-Variant": variant, "X-Request-Id": request_id, "X-Retried": str(int(retried)),
                       "X-Model-Version": extra.get("X-Model-Version", "")}
        return status, payload, out_headers

    def _record_green(self, variant: str, latency: float, failed: bool):
        if variant == "green":
            with self.lock:
                self._green_period.append((latency, failed))

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
            with self.lock:
                samples, self._green_period = self._green_period, []
                deployment = self.deployment
            if deployment is None or deployment.done:
                continue
            weight = deployment.tick(time.time(), PeriodStats.from_samples(samples))
            with self.lock:
                self.green_weight = weight
            self.m_weight.set(weight)
            for name, on in deployment.alarm_state.items():
                self.m_alarm.labels(name).set(int(on))
            if deployment.phase == "rolled_back":
                self.m_rollbacks.inc()

    def set_traffic(self, green_weight=None, sticky=None, shadow_fraction=None, capture_sample=None, salt=None):
        with self.lock:
            if self.deployment is not None and not self.deployment.done:
                self.deployment.phase = "rolled_back"  # a manual change ends a running deployment
                self.deployment.events.append((time.time(), "deployment stopped by an operator", 0.0))
            if green_weight is not None:
                self.green_weight = _fraction("green_weight", green_weight)
            if sticky is not None:
                self.sticky = bool(sticky)
            if salt is not None:
                self.salt = str(salt)
            if shadow_fraction is not None:
                self.shadow_fraction = _fraction("shadow_fraction", shadow_fraction)
            if capture_sample is not None:
                self.capture_sample = float(capture_sample)
        self.m_weight.set(self.green_weight)

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
                    "step": d.step, "alarm_state": dict(d.alarm_state)},
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
                status, payload, extra = 502, b"", {"X-Model-Version": ""}
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
            pass

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
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    router: Router

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        pass

    def _send(self, status, body: bytes, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode())

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ("/ping", "/health"):
            self._send(200, b"\n")
        elif path == "/metrics":
            self._send(200, generate_latest(self.router.registry), CONTENT_TYPE_LATEST)
        elif path == "/admin/state":
            self._json(200, self.router.state())
        else:
            self._json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no route GET {path}"})

    def do_POST(self):
        path = self.path.split("?")[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._json(400, {"error_code": "BAD_REQUEST", "message": "invalid Content-Length"})
        body = self.rfile.read(length) if length > 0 else b""
        if path == "/invocations":
            if not body:
                return self._json(400, {"error_code": "BAD_REQUEST", "message": "empty request body"})
            status, payload, headers = self.router.handle(body, self.headers.get("Content-Type", ""),
                                                          self.headers.get("X-User-Id"),
                                                          self.headers.get("X-Target-Variant"))
            return self._send(status, payload, "application/json", headers)
        if path.startswith("/admin/"):
            try:
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("expected a JSON object")
                self._admin(path, spec)
            except (ValueError, TypeError, KeyError) as error:
                return self._json(400, {"error_code": "BAD_REQUEST", "message": f"{type(error).__name__}: {error}"})
            return self._json(200, self.router.state())
        self._json(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no route POST {path}"})

    def _admin(self, path: str, spec: dict):
        router = self.router
        if path == "/admin/traffic":
            router.set_traffic(**{k: spec[k] for k in ("green_weight", "sticky", "shadow_fraction",
                                                         "capture_sample", "salt") if k in spec})
        elif path == "/admin/deploy":
            plan = RolloutPlan(**{k: spec[k] for k in ("strategy", "canary_size", "step_size", "bake_s",
                                                        "final_bake_s") if k in spec})
            router.deploy(plan, tuple(alarm_from_dict(a) for a in spec.get("alarms", [])))
        elif path == "/admin/rollback":
            router.rollback(spec.get("reason", "manual rollback"))
        elif path == "/admin/switch":
            router.switch()
        elif path == "/admin/backends":
            with router.lock:
                for variant in VARIANTS:
                    if variant in spec:
                        router.backends[variant] = str(spec[variant]).rstrip("/")
        else:
            raise KeyError(f"no admin route {path}")


def router_command(blue: str, green: str = "", *, period_s: float = 1.0, capture: str | None = None,
                   capture_sample: float = 0.1, seed: int | None = None, python: str | None = None) -> list[str]:
    """The command that starts a router on ``{port}`` (for :class:`mlops_lab.servers.BackgroundServer`).

    It runs this file as a script, not ``-m mlops_lab.router``: the router needs only the standard library
    and prometheus_client, and skipping the package's ``__init__`` (NumPy, pandas) saves about 90 MB.
    A ``seed`` makes the random choices (canary split, shadow and capture sampling) repeatable.
    """
    command = [python or sys.executable, os.path.abspath(__file__), "--blue", blue, "--green", green or "",
               "--port", "{port}", "--period", str(period_s)]
    if capture:
        command += ["--capture", str(capture), "--capture-sample", str(capture_sample)]
    if seed is not None:
        command += ["--seed", str(seed)]
    return command


def make_server(router: Router, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"router": router})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Route traffic between a blue and a green model server.")
    parser.add_argument("--blue", required=True, help="base URL of the champion's server")
    parser.add_argument("--green", default="", help="base URL of the challenger's server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--period", type=float, default=1.0, help="alarm evaluation period in seconds")
    parser.add_argument("--timeout", type=float, default=5.0, help="backend timeout in seconds")
    parser.add_argument("--capture", default=None, help="append sampled requests to this JSON-lines file")
    parser.add_argument("--capture-sample", type=float, default=0.1, help="share of requests captured")
    parser.add_argument("--seed", type=int, default=None, help="seed for traffic splits and sampling")
    args = parser.parse_args(argv)
    router = Router(args.blue, args.green, period_s=args.period, timeout_s=args.timeout,
                    capture=args.capture, capture_sample=args.capture_sample if args.capture else 0.0, seed=args.seed)
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
