"""Retraining triggered by drift: the pieces of the closed loop, and a fast simulation of a year of it.

The loop (chapter 12) is: monitor -> alarm -> retrain through the DVC pipeline -> validation gate against the
champion -> canary through the router -> promote or roll back. This module holds what is plumbing in it:

- :func:`validate_batch` checks a batch against the data contract (:data:`SCHEMA`: columns, types, ranges,
  categories, missing values) and :func:`quarantine` moves a batch that fails it aside, with a Markdown
  report, so it never reaches training; nothing else changes (the champion keeps serving).
- :class:`RetrainGuard` makes sure one alarm storm starts one retrain: while a retrain runs the trigger is
  disabled (the AWS sample for drift-triggered retraining disables its EventBridge rule the same way) and
  every alarm meanwhile is counted as *suppressed*. It is a lock file created atomically, so two processes
  (two monitors, a scheduler) cannot both retrain.
- :func:`simulate_year` runs three policies (never retrain, retrain on a schedule, retrain when a drift alarm
  fires) over a year of weekly batches in-process, in a few seconds: the comparison the chapter plots.
- :func:`canary_release` is the loop's deployment step: it points the router's green at the new model's
  server, starts the router's canary (chapter 10's state machine, watched by an error alarm) and drives
  traffic until the router has promoted green or rolled back. The chapter runs the live loop step by step
  with the real DVC pipeline (:mod:`mlops_lab.dvc_project`), the registry gate (:mod:`mlops_lab.registry`)
  and this.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .drift import DriftDetector
from .models import evaluate, train
from .monitoring import AlarmRule
from .simulator import CATEGORICAL, FEATURES, HOME, NUMERIC, PURPOSES, TARGET, CreditStream

# ---- the data contract ------------------------------------------------------------------------------------
# column -> (allowed range (low, high) or allowed values, whether it must be a whole number)
SCHEMA: dict[str, tuple] = {
    "age": ((18, 100), True), "income": ((0, 5_000_000), False), "employment_years": ((0, 80), False),
    "loan_amount": ((100, 1_000_000), False), "loan_term": ({36, 60}, True),
    "debt_to_income": ((0, 1.5), False), "credit_score": ((300, 850), True),
    "open_accounts": ((0, 100), True), "delinquencies_2y": ((0, 50), True),
    "home_ownership": (set(HOME), False), "purpose": (set(PURPOSES), False), TARGET: ({0, 1}, True),
}


@dataclass
class ValidationReport:
    """What is wrong with a batch: one row per problem (check, column, rows affected, examples)."""

    name: str
    rows: int
    problems: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.problems.empty

    def to_markdown(self) -> str:
        head = f"### Batch `{self.name}`: {self.rows} rows, "
        if self.ok:
            return head + "passes every check."
        return (head + f"**quarantined**: {len(self.problems)} problem(s)\n\n"
                + self.problems.to_markdown(index=False))


def validate_batch(batch: pd.DataFrame, name: str = "batch", schema: dict = SCHEMA,
                   require_label: bool = True) -> ValidationReport:
    """Check ``batch`` against the data contract; every violation becomes a row of the report."""
    problems = []

    def problem(check, column, mask_or_count, examples=()):
        count = int(np.sum(mask_or_count)) if not isinstance(mask_or_count, int) else mask_or_count
        if count:
            problems.append({"check": check, "column": column, "rows": count,
                             "examples": ", ".join(map(str, list(examples)[:3]))})

    expected = [c for c in schema if require_label or c != TARGET]
    missing = [c for c in expected if c not in batch.columns]
    for column in missing:
        problem("schema: column missing", column, len(batch) or 1)
    for column in expected:
        if column in missing:
            continue
        values = batch[column]
        allowed, whole = schema[column]
        nan = values.isna().to_numpy()
        problem("missing values", column, nan)
        present = values[~nan]
        if isinstance(allowed, set):
            as_text = present.astype(str) if column in CATEGORICAL else present
            if column not in CATEGORICAL:
                as_num = pd.to_numeric(present, errors="coerce")
                bad = ~as_num.isin(allowed)
                problem("value not allowed", column, bad.to_numpy(), present[bad].unique())
            else:
                bad = ~as_text.isin(allowed)
                problem("unknown category", column, bad.to_numpy(), as_text[bad].unique())
            continue
        numbers = pd.to_numeric(present, errors="coerce")
        not_number = numbers.isna().to_numpy()
        problem("schema: not a number", column, not_number, present[not_number].unique())
        numbers = numbers[~not_number].to_numpy(dtype=float)
        low, high = allowed
        out = (numbers < low) | (numbers > high) | ~np.isfinite(numbers)
        problem(f"out of range [{low:g}, {high:g}]", column, out, numbers[out])
        if whole:
            problem("not a whole number", column, np.isfinite(numbers) & (numbers != np.round(numbers)))
    return ValidationReport(name, len(batch), pd.DataFrame(problems, columns=["check", "column", "rows", "examples"]))


def quarantine(path: str | Path, report: ValidationReport, folder: str | Path) -> Path:
    """Move the batch file at ``path`` into ``folder`` with its report beside it; returns the report's path.

    The file is moved, not deleted: someone can look at it, fix the export, and replay it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(path).name
    shutil.move(str(path), target)
    report_path = target.with_suffix(".report.md")
    report_path.write_text(report.to_markdown() + "\n")
    return report_path


# ---- one retrain at a time -----------------------------------------------------------------------------------
class RetrainGuard:
    """A lock that disables the retraining trigger while a retrain runs.

    >>> guard = RetrainGuard(workspace / "retrain.lock")
    >>> if guard.acquire("drift alarm on 2024-05"):   # False (and counted) if a retrain is already running
    ...     try: retrain()
    ...     finally: guard.release()

    The lock file is created with ``O_CREAT | O_EXCL``: atomic, so two processes cannot both win it. It
    records who holds it and why; a lock older than ``stale_after_s`` (a crashed retrain) is broken.
    """

    def __init__(self, path: str | Path, stale_after_s: float = 3600):
        self.path, self.stale_after_s = Path(path), stale_after_s
        self.suppressed: list[str] = []

    @property
    def busy(self) -> bool:
        return self.path.exists()

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def acquire(self, reason: str) -> bool:
        holder = self.holder()
        if holder and time.time() - holder.get("since", 0) > self.stale_after_s:
            self.path.unlink(missing_ok=True)  # the retrain that held it died long ago
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            self.suppressed.append(reason)
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"reason": reason, "since": time.time(), "pid": os.getpid()}, handle)
        return True

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


# ---- a simulated year -----------------------------------------------------------------------------------------
POLICIES = ("none", "scheduled", "drift")


@dataclass
class YearConfig:
    """The simulated year: one simulator tick is a week here."""

    weeks: int = 52
    train_weeks: int = 4          # a model learns from the latest 4 labelled weeks
    label_delay: int = 2          # outcomes (an early-default proxy) are known 2 weeks after the application
    deploy_delay: int = 2         # retrain, gate and canary take two weeks: a model started in week w serves from w + 2
    every: int = 4                # the scheduled policy retrains every 4 weeks
    evaluation_periods: int = 3   # the drift alarm: ALARM when 2 of the last 3 weekly checks drift
    datapoints_to_alarm: int = 2
    alpha: float = 0.05
    correction: str = "holm"


def simulate_year(stream: CreditStream, policy: str, config: YearConfig = YearConfig()) -> pd.DataFrame:
    """Serve a year of weekly batches under ``policy``; one row per served week.

    ``none`` keeps the first model; ``scheduled`` retrains every ``config.every`` weeks; ``drift`` checks
    each week's inputs against the serving model's training data (:class:`DriftDetector`, Holm-corrected
    tests) and retrains when a CloudWatch-style M-of-N alarm on "any feature drifted" fires. In both
    retraining policies a retrain started while another is pending is suppressed (the guard), and a new
    model learns from the latest ``train_weeks`` weeks whose labels have arrived.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    c = config
    batches = {w: stream.month(w) for w in range(c.weeks)}
    start = pd.Timestamp("2024-01-01")

    def fit(last_labelled_week: int):
        weeks = range(max(0, last_labelled_week - c.train_weeks + 1), last_labelled_week + 1)
        data = pd.concat([batches[w] for w in weeks], ignore_index=True)
        return train(data), data

    model, reference = fit(c.train_weeks - 1)
    version, pending = 1, None
    detector = DriftDetector(reference, NUMERIC, CATEGORICAL, alpha=c.alpha, correction=c.correction)
    rule = AlarmRule("any_feature_drifted", threshold=0, period="7D", evaluation_periods=c.evaluation_periods,
                     datapoints_to_alarm=c.datapoints_to_alarm)
    checks: dict[pd.Timestamp, float] = {}
    rows = []
    for week in range(c.train_weeks, c.weeks):
        if pending is not None and week >= pending[0]:       # a retrained model goes live
            _, model, reference = pending
            version, pending = version + 1, None
            detector = DriftDetector(reference, NUMERIC, CATEGORICAL, alpha=c.alpha, correction=c.correction)
            checks = {}                                        # a new baseline: the monitor starts over
        batch = batches[week]
        scores = evaluate(model, batch)
        drifted, state, trigger = np.nan, "", False
        if policy == "drift":
            report = detector.compare(batch)
            drifted = int(report["drifted"].sum())
            checks[start + pd.Timedelta(weeks=week)] = drifted
            state = rule.evaluate(pd.Series(checks))["state"].iloc[-1]
            trigger = state == "ALARM"
        elif policy == "scheduled":
            trigger = (week - c.train_weeks + 1) % c.every == 0
        started = suppressed = False
        if trigger and pending is None:
            new_model, new_reference = fit(week - c.label_delay)
            pending, started = (week + c.deploy_delay, new_model, new_reference), True
        elif trigger:
            suppressed = True
        rows.append({"week": week, "policy": policy, "version": version, "accuracy": scores["accuracy"],
                     "auc": scores["auc"], "default_rate": scores["default_rate"], "drifted_features": drifted,
                     "alarm": state, "retrain_started": started, "suppressed": suppressed})
    return pd.DataFrame(rows).set_index("week")


def compare_policies(stream: CreditStream, config: YearConfig = YearConfig()) -> pd.DataFrame:
    """:func:`simulate_year` for every policy, stacked (one row per policy and week)."""
    return pd.concat([simulate_year(stream, policy, config) for policy in POLICIES])


# ---- the live loop's canary step ------------------------------------------------------------------------------
def canary_release(router_url: str, green_url: str, bodies, *, canary_size: float = 0.2, bake_s: float = 2.0,
                   final_bake_s: float = 1.0, alarms=({"metric": "error_rate", "threshold": 0.05},),
                   rate: float = 60.0, timeout_s: float = 60.0) -> dict:
    """Point the router's green at ``green_url``, start a canary deployment and drive traffic until it ends.

    The router's own state machine (chapter 10) does the work: ``canary_size`` of the traffic to green, a
    bake watched by ``alarms``, then all of it, another bake, and the blue/green switch; any alarm rolls all
    traffic back to blue. Returns the outcome (``promoted`` or ``rolled_back``), the router's events and a
    summary of the client's view (requests, errors, green's share).
    """
    from .loadgen import get_json, post, run_load, summarize

    def admin(path, spec):
        status, answer, _ = post(f"{router_url}/admin/{path}", json.dumps(spec))
        if status != 200:
            raise RuntimeError(f"router refused /admin/{path}: {answer}")
        return answer

    admin("backends", {"green": green_url})
    admin("deploy", {"strategy": "canary", "canary_size": canary_size, "bake_s": bake_s,
                     "final_bake_s": final_bake_s, "alarms": list(alarms)})
    started = time.time()

    def finished():
        phase = get_json(f"{router_url}/admin/state")["deployment"]["phase"]
        return phase in ("promoted", "rolled_back") or time.time() - started > timeout_s

    log = run_load(router_url, bodies, rate=rate, stop=finished, concurrency=2)
    state = get_json(f"{router_url}/admin/state")
    return {"outcome": state["deployment"]["phase"], "green_weight": state["green_weight"],
            "events": [e for e in state["events"] if e["t"] >= started - 1],
            "client": summarize(log), "green_share": float((log["variant"] == "green").mean()) if len(log) else 0.0}
