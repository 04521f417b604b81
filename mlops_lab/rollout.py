"""Rollouts as a pure state machine: the A/B assignment, the alarms, the plan and the deployment that follows it.

No I/O and no clock of its own: the router (:mod:`mlops_lab.router`) drives :class:`Deployment` with its
clock and green's traffic once per period, and :func:`simulate_rollout` drives the very same code with
simulated traffic (chapter 10's widget). :func:`assignment_bucket` is shared with the A/B analysis
(:func:`mlops_lab.canary.assign_arms`).
"""
from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field

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
