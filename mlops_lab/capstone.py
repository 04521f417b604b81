"""The capstone: one scenario per student, drawn from the simulator's knobs, and the rubric it is marked on.

>>> brief = scenario("student-042")          # the same student always gets the same scenario
>>> print(brief.markdown())

Each scenario changes what the book's running example held fixed: which drift hits the lender (covariate,
label or concept shift, its strength, when it starts and how fast it ramps) and the business's constraints
(the cost of a missed default against a declined good applicant, the lowest approval rate the business
accepts, the scoring service's p99 latency objective, and how many retrains a quarter it pays for). A student
runs the whole loop of chapter 13 on their scenario, from a fresh clone, with one command. The draw is a hash
of the course's salt and the student's id, so an instructor can regenerate any student's brief, and a new
salt gives a new class new scenarios.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .simulator import Drift, month_label

DRIFT_KINDS = ("covariate", "label", "concept")
STRENGTHS = (0.8, 1.0, 1.5, 2.0)          # 1 is a realistic recession, 2 a severe one (simulator.Drift)
START_MONTHS = tuple(range(2, 10))        # months after the champion goes live (2024-01): March to October
RAMPS = (0, 1, 3, 6)                      # months from the first sign to full strength (0: a step)
COST_RATIOS = (3, 5, 8, 12)               # a missed default costs this many declined good applicants
MIN_APPROVAL = (0.35, 0.40, 0.45)         # the business will not approve fewer applicants than this
P99_MS = (50, 100, 200)                   # the scoring service's latency objective
RETRAINS_PER_QUARTER = (1, 2, 3)          # the compute budget


@dataclass(frozen=True)
class Scenario:
    student: str
    kind: str
    drift: Drift
    cost_ratio: int
    min_approval_rate: float
    p99_latency_ms: int
    retrains_per_quarter: int
    seed: int

    def markdown(self) -> str:
        """The student's brief, as it goes into their repository's README."""
        strength = getattr(self.drift, self.kind)
        return "\n".join([
            f"## Capstone scenario for {self.student}",
            "",
            f"- **The world**: {self.kind} drift of strength {strength:g}, first felt in "
            f"{month_label(self.drift.start_month)}, at full strength "
            f"{'at once' if self.drift.ramp_months == 0 else f'{self.drift.ramp_months} months later'} "
            f"(`Drift({self.kind}={strength:g}, start_month={self.drift.start_month}, "
            f"ramp_months={self.drift.ramp_months})`, simulator seed {self.seed}).",
            f"- **Costs**: a missed default costs {self.cost_ratio} times a declined good applicant.",
            f"- **The business**: approves at least {self.min_approval_rate:.0%} of applicants.",
            f"- **The service**: p99 latency at most {self.p99_latency_ms} ms.",
            f"- **The budget**: at most {self.retrains_per_quarter} retrain(s) a quarter.",
        ])


def scenario(student: str, salt: str = "q4") -> Scenario:
    """The scenario of ``student`` (any id: a login, a number) for a class drawn with ``salt``."""
    if not str(student).strip():
        raise ValueError("a student id is needed: the scenario is drawn from it")
    digest = hashlib.sha256(f"{salt}:{str(student).strip()}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    kind = DRIFT_KINDS[rng.integers(len(DRIFT_KINDS))]
    drift = Drift(**{kind: float(rng.choice(STRENGTHS))}, start_month=int(rng.choice(START_MONTHS)),
                  ramp_months=int(rng.choice(RAMPS)))
    return Scenario(student=str(student).strip(), kind=kind, drift=drift,
                    cost_ratio=int(rng.choice(COST_RATIOS)), min_approval_rate=float(rng.choice(MIN_APPROVAL)),
                    p99_latency_ms=int(rng.choice(P99_MS)), retrains_per_quarter=int(rng.choice(RETRAINS_PER_QUARTER)),
                    seed=int(rng.integers(1, 10_000)))


# The rubric (points per criterion, 100 in all) and what full marks look like; instructors/guide.md shows it.
RUBRIC = (
    ("One command from a fresh clone", 15, "`git clone` then one command runs the whole loop on the student's "
     "scenario; nothing depends on their machine (paths, credentials, a running server)."),
    ("Data and pipeline under version control", 10, "every month's data under DVC, the pipeline in `dvc.yaml`, "
     "each run's data hash and commit recorded with its model."),
    ("The clock", 15, "no model, gate or monitor uses a label from after its date; the code asserts it, and "
     "the report says which label each step learns or judges on and when it is known."),
    ("Gates with derived thresholds", 15, "the data contract and the model gate refuse what they should; each "
     "threshold comes from a false-alarm rate, a cost or a budget, stated with the computation."),
    ("Release with guardrails", 10, "a canary (or another strategy the student defends) with alarms that "
     "roll back by themselves, shown working on a broken release."),
    ("Monitoring and the alert that retrains", 15, "metrics in Prometheus, alerting rules tested with promtool, "
     "and the drift (or quality) alert starting the pipeline; the scenario's latency objective as an SLO."),
    ("Decisions against the business's constraints", 10, "the retraining policy and the approval cut-off "
     "chosen against the scenario's costs, approval floor and retrain budget, with the evidence."),
    ("SageMaker mapping and cost", 10, "each part mapped onto its SageMaker service, the requests validated "
     "offline, and a monthly cost estimate with its assumptions and sources."),
)
