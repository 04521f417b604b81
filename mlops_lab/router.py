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

The deployment logic is a pure state machine (:class:`Deployment` with :class:`RolloutPlan` and
:class:`Alarm`), driven here by the router's clock and by :func:`simulate_rollout` in a fast offline
simulation: the chapter's widget runs the very same code.

Failure policy: the router never routes around the plan. A request whose variant cannot be reached
(connection refused or reset, timeout) may only go to another replica of the *same* variant; each variant
has one backend here, so there is none, and the client gets a 503 ``{"error_code": "VARIANT_UNAVAILABLE",
"message": "the green variant is unreachable: ..."}`` with ``X-Variant`` naming that variant. Sending it to
the other variant instead would give a canary's clients a release nobody has judged, a shadow test's clients
the shadow, and an A/B test's user the other arm. The failure counts as that variant's error (a green that
cannot be reached counts against green's alarms, which then roll the canary back). A kept-alive connection
the backend closed meanwhile is reopened once (same backend). An HTTP answer (even a 5xx) is passed to the
client as it is, never retried.

Admin API (JSON): ``GET /admin/state``; ``POST /admin/traffic`` ``{"green_weight", "sticky", "salt",
"shadow_fraction", "capture_sample"}``; ``POST /admin/deploy`` ``{"strategy", "canary_size", "step_size",
"bake_s", "final_bake_s", "alarms": [{"metric", "threshold", ...}]}``; ``POST /admin/rollback``;
``POST /admin/switch`` (green takes 100 % at once); ``POST /admin/backends`` ``{"blue", "green"}``.
Every field is checked before anything changes: weights and shares are finite numbers in [0, 1], bake
times finite and > 0, backends ``http://127.0.0.1:<port>`` or ``http://localhost:<port>``, and unknown
fields are refused; a refusal is a 400 ``{"error_code": "INVALID_PARAMETER_VALUE", "field", "message"}``.
A route asked with a method it does not take answers 405 in JSON with an ``Allow`` header (``HEAD`` is
answered on ``/ping`` and ``/health``).

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
import hashlib
import http.client
import json
import math
import numbers
import os
import queue
import random
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import MISSING, asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

VARIANTS = ("blue", "green")
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CAPTURE_SCHEMA = 1
STRATEGIES = ("all_at_once", "canary", "linear")
# A step whose bake has passed without enough green traffic waits for it (inconclusive, as Argo Rollouts'
# analysis), up to this many times its bake in all; then the deployment is rolled back.
INCONCLUSIVE_BAKES = 3


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
        if not (0 <= self.bake_s < math.inf and 0 <= self.final_bake_s < math.inf):  # NaN too: it never ends
            raise ValueError("bake times must be finite and >= 0")

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

    def to_sagemaker(self, alarms: tuple[Alarm, ...] = (), endpoint: str = "credit-risk") -> dict:
        """This plan as the ``DeploymentConfig`` of SageMaker's ``UpdateEndpoint``: the blue/green traffic
        routing, and the alarms (as CloudWatch alarm names) that roll the endpoint back. Raises ValueError for
        a plan SageMaker cannot run (:func:`mlops_lab.sagemaker.deployment_config`)."""
        from .sagemaker import deployment_config     # botocore, only when asked

        return deployment_config(self, [f"{endpoint}-green-{alarm.metric}" for alarm in alarms])


def evidence_needed(alarms: tuple[Alarm, ...]) -> int:
    """Green requests a step must serve before it may pass: enough for every alarm to see a full window of
    periods that are not missing data (its ``min_requests`` x ``evaluation_periods``, the largest over the
    alarms; an :class:`Alarm`'s defaults, 15, when there are none)."""
    return max(alarm.min_requests * alarm.evaluation_periods for alarm in alarms or (Alarm("error_rate", 0.0),))


@dataclass
class Deployment:
    """The deployment state machine: call :meth:`tick` once per evaluation period with green's stats.

    ``phase`` goes ``baking`` (step by step) then ``promoted`` (the switch), or ``rolled_back`` the moment
    any alarm is in ALARM or a step stays inconclusive too long. ``events`` records (time, what happened,
    green weight) for timelines.

    No evidence, no promotion: a step passes only once its bake is over *and* green served at least
    ``min_green_requests`` requests during it (default :func:`evidence_needed` of the alarms). Until then the
    step is inconclusive and keeps baking; after ``INCONCLUSIVE_BAKES`` times its bake it is rolled back
    with the event "inconclusive: too little green traffic".
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
    min_green_requests: int | None = None
    step_requests: int = 0  # green requests served during the current step

    def __post_init__(self):
        if self.min_green_requests is None:
            self.min_green_requests = evidence_needed(self.alarms)
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
        self.step_requests += stats.requests
        steps = self.plan.steps()
        baked, bake = now - self.step_started, steps[self.step][1]
        if baked < bake - 1e-9:
            return self.weight                                     # still baking
        if self.step_requests < self.min_green_requests:           # baked, but green served too few requests
            if baked >= INCONCLUSIVE_BAKES * bake - 1e-9:
                self.phase = "rolled_back"
                self.events.append((now, "inconclusive: too little green traffic", 0.0))
            return self.weight
        self.step_requests = 0
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


# ---- admin values: every field is checked before anything changes ---------------------------------------
PLAN_FIELDS = ("strategy", "canary_size", "step_size", "bake_s", "final_bake_s")
ALARM_FIELDS = ("metric", "threshold", "evaluation_periods", "datapoints_to_alarm", "min_requests")
ALARM_DEFAULTS = {f.name: f.default for f in fields(Alarm) if f.default is not MISSING}
LOCAL_HOSTS = ("127.0.0.1", "localhost")  # the router only ever fronts servers on this machine


class InvalidField(ValueError):
    """An admin value outside its domain; ``field`` names it (the admin API answers 400 with it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field = field


def _number(field: str, value, low=-math.inf, high=math.inf, *, open_low=False, open_high=False) -> float:
    """A finite number in its interval. Strings and booleans are refused, not guessed: "0.5" or true is a
    client's bug. NaN is refused too: every comparison with it is False, so it would pass any range check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidField(field, f"must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise InvalidField(field, f"must be in {interval}, got {value!r}")
    return float(value)


def _fraction(field: str, value) -> float:
    return _number(field, value, 0.0, 1.0)


def _integer(field: str, value, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise InvalidField(field, f"must be a whole number in [{low}, {high:g}], got {value!r}")
    return int(value)


def _typed(kind: type, name: str):
    def check(field: str, value):
        if not isinstance(value, kind):
            raise InvalidField(field, f"must be a {name}, got {value!r}")
        return value
    return check


def _choice(field: str, value, choices: tuple):
    if not isinstance(value, str) or value not in choices:
        raise InvalidField(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _known(spec: dict, allowed, prefix: str = "") -> None:
    """Unknown fields are refused: a misspelt ``bake`` silently ignored would run the default bake."""
    for key in spec:
        if key not in allowed:
            raise InvalidField(prefix + key, f"is not a known field (known: {', '.join(allowed) or 'none'})")


TRAFFIC_FIELDS = {"green_weight": _fraction, "sticky": _typed(bool, "boolean"), "salt": _typed(str, "string"),
                  "shadow_fraction": _fraction, "capture_sample": _fraction}


def backend_url(field: str, value) -> str:
    """``http://127.0.0.1:<port>`` or ``http://localhost:<port>`` (a trailing slash is dropped)."""
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        valid = parts is not None and parts.scheme == "http" and parts.hostname in LOCAL_HOSTS and \
            bool(parts.port) and parts.path in ("", "/") and not (parts.query or parts.fragment or parts.username)
    except ValueError:  # a port out of range, a malformed host
        valid = False
    if not valid:
        raise InvalidField(field, f"must be http://127.0.0.1:<port> or http://localhost:<port>, got {value!r}")
    return value.rstrip("/")


def plan_from_dict(spec: dict) -> RolloutPlan:
    """A :class:`RolloutPlan` from the admin API's fields; bakes must be finite and > 0 (a NaN bake never ends)."""
    _known(spec, PLAN_FIELDS)
    checks = {"strategy": lambda f, v: _choice(f, v, STRATEGIES),
              "canary_size": lambda f, v: _number(f, v, 0, 1, open_low=True, open_high=True),
              "step_size": lambda f, v: _number(f, v, 0, 1, open_low=True),
              "bake_s": lambda f, v: _number(f, v, 0, open_low=True),
              "final_bake_s": lambda f, v: _number(f, v, 0, open_low=True)}
    return RolloutPlan(**{key: checks[key](key, value) for key, value in spec.items()})


def alarm_from_dict(spec, field: str = "alarm") -> Alarm:
    """An :class:`Alarm` from the admin API's fields; ``field`` prefixes the name of a refused one."""
    if not isinstance(spec, dict):
        raise InvalidField(field, f"must be an object with {', '.join(ALARM_FIELDS)}, got {spec!r}")
    _known(spec, ALARM_FIELDS, field + ".")
    for required in ("metric", "threshold"):
        if required not in spec:
            raise InvalidField(f"{field}.{required}", "is required")
    values = {**ALARM_DEFAULTS, **spec}
    periods = _integer(f"{field}.evaluation_periods", values["evaluation_periods"], 1)
    return Alarm(_choice(f"{field}.metric", values["metric"], ("error_rate", "p99_latency")),
                 _number(f"{field}.threshold", values["threshold"], 0),
                 evaluation_periods=periods,
                 datapoints_to_alarm=_integer(f"{field}.datapoints_to_alarm", values["datapoints_to_alarm"], 1,
                                              periods),
                 min_requests=_integer(f"{field}.min_requests", values["min_requests"], 1))


def alarms_from_list(value) -> tuple[Alarm, ...]:
    if not isinstance(value, list):
        raise InvalidField("alarms", f"must be a list of alarm objects, got {value!r}")
    return tuple(alarm_from_dict(spec, f"alarms[{i}]") for i, spec in enumerate(value))


# ---- the router process ---------------------------------------------------------------------------------
class BackendUnavailable(Exception):
    """The backend could not be reached or dropped the connection: another replica of the same variant could
    take the request, never the other variant."""


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
        self.counts = {"requests": 0, "unreachable": 0, "shadowed": 0, "shadow_errors": 0}
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
        unreachable = False
        try:
            status, payload, extra = self.forward(variant, body, headers)
        except BackendUnavailable as error:
            unreachable, status, extra = True, 503, {"X-Model-Version": ""}
            payload = json.dumps({"error_code": "VARIANT_UNAVAILABLE",
                                  "message": f"the {variant} variant is unreachable: {error}"}).encode()
        failed = status >= 500
        elapsed = time.perf_counter() - start
        self._record_green(variant, elapsed, failed)
        if failed:
            self.m_backend_errors.labels(variant).inc()
        self.m_requests.labels(variant, str(status)).inc()
        self._latency[variant].observe(elapsed)
        with self.lock:
            self.counts["requests"] += 1
            self.counts["unreachable"] += unreachable
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
        out_headers = {"X-Variant": variant, "X-Request-Id": request_id,
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
        _known(urls, VARIANTS)
        checked = {variant: backend_url(variant, url) for variant, url in urls.items()}
        with self.lock:
            self.backends.update(checked)

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
ROUTES = {"/invocations": ("POST",), "/ping": ("GET", "HEAD"), "/health": ("GET", "HEAD"), "/metrics": ("GET",),
          "/admin/state": ("GET",)}


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods a route takes (every other ``/admin/...`` path is an admin action: POST), None if no route."""
    return ROUTES.get(path) or (("POST",) if path.startswith("/admin/") else None)


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
        if self.command != "HEAD":  # a HEAD answer carries the headers of the GET answer, never its body
            self.wfile.write(body)

    def _json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _read_body(self) -> bytes | None:
        """The request's body (b"" if none), or None after answering 400 to a malformed Content-Length."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._json(400, {"error_code": "BAD_REQUEST", "message": "invalid Content-Length"})
            return None
        return self.rfile.read(length) if length > 0 else b""

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

    def _refuse(self):
        """PUT, DELETE, PATCH: no route takes them (the body is read first, so the connection stays usable)."""
        if self._read_body() is not None:
            self._method_refused(self.path.split("?")[0])

    do_PUT = do_DELETE = do_PATCH = _refuse

    def do_HEAD(self):
        path = self.path.split("?")[0]
        if not self._method_refused(path):
            self._send(200, b"\n")  # only /ping and /health take HEAD

    def do_GET(self):
        path = self.path.split("?")[0]
        if self._method_refused(path):
            return
        if path in ("/ping", "/health"):
            self._send(200, b"\n")
        elif path == "/metrics":
            self._send(200, generate_latest(self.router.registry), CONTENT_TYPE_LATEST)
        else:
            self._json(200, self.router.state())

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self._read_body()
        if body is None or self._method_refused(path):
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
            _known(spec, tuple(TRAFFIC_FIELDS))
            router.set_traffic(**spec)
        elif path == "/admin/deploy":
            alarms = alarms_from_list(spec.get("alarms", []))
            router.deploy(plan_from_dict({k: v for k, v in spec.items() if k != "alarms"}), alarms)
        elif path == "/admin/rollback":
            _known(spec, ("reason",))
            router.rollback(_typed(str, "string")("reason", spec.get("reason", "manual rollback")))
        elif path == "/admin/switch":
            _known(spec, ())
            router.switch()
        elif path == "/admin/backends":
            _known(spec, VARIANTS)
            router.set_backends(**spec)
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
