"""Retraining on the book's clock: the pieces of the closed loop, and a fast simulation of a year of it.

The loop (chapter 12) is: monitor -> alarm -> retrain through the DVC pipeline on the newest months whose
labels have arrived -> canary through the router -> validation gate against the champion on a holdout
labelled on the day of the gate -> the ``champion`` alias moves (or the router rolls back). This module holds
what is plumbing in it:

- :func:`validate_batch` checks a batch against the book's one data contract (:mod:`mlops_lab.contract`, a
  pandera schema: columns, types, ranges, categories, missing values, unique ids; a label may be unknown,
  ``<NA>``, as in a warehouse snapshot, but a known one must be 0 or 1, on an approved loan, with its known
  date) and :func:`quarantine` moves a batch that fails it aside, with a Markdown report, so it never
  reaches training; nothing else changes (the champion keeps serving).
- :class:`RetrainGuard` makes sure one alarm storm starts one retrain: while a retrain runs the trigger is
  disabled (the AWS sample for drift-triggered retraining disables its EventBridge rule the same way) and
  every alarm meanwhile is counted as *suppressed*. It is a lock file created atomically, so two processes
  (two monitors, a scheduler) cannot both retrain.
- :func:`simulate_year`, :func:`compare_policies` and :class:`SimulatedYear` serve a year of weekly
  applications on real dates under four policies (never retrain, retrain on a schedule, retrain on an
  input-drift alarm, retrain on a performance alarm fed by labels as they arrive), or any trigger function,
  learning from the 12-month outcome or the early-delinquency label. Every model learns only from labels
  known on the day it is trained (:func:`~mlops_lab.simulator.newest_complete_month`), every monitor only
  from labels known on its day; the lags come from the data. In-process, in seconds.
- :func:`canary_release` is the loop's deployment step: it points the router's green at the new model's
  server, starts the router's canary (chapter 10's state machine, watched by an error alarm) and drives
  traffic until the router has promoted green or rolled back. The chapter runs the live loop step by step
  with the real DVC pipeline (:mod:`mlops_lab.dvc_project`), the registry gate (:mod:`mlops_lab.registry`)
  and this.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import contract
from .drift import DriftDetector
from .models import train
from .monitoring import auc_with_se
from .simulator import (APPROVED, CATEGORICAL, EARLIEST_MONTH, EARLY_LABEL, FEATURES, KNOWN, LABELS, NUMERIC,
                        OUTCOME_MONTHS, START, TARGET, CreditStream, check_known, month_label,
                        newest_complete_month)

# ---- the data contract (one definition of good data: mlops_lab.contract) -----------------------------------------
SCHEMA = contract.SCHEMA            # the pandera schema; see mlops_lab.contract for every rule and why
ValidationReport = contract.ValidationReport


def validate_batch(batch: pd.DataFrame, name: str = "batch", require_label: bool = True, *, reference=None,
                   as_of=None) -> ValidationReport:
    """Check ``batch`` against the data contract (:func:`mlops_lab.contract.validate`); every violation is a row.

    Features must be present, typed, in range and never missing. Labels may be unknown (``<NA>``: not known
    yet on the export's date, or a declined applicant, never observed); a known label must be 0 or 1, on an
    approved loan, with its known date. ``require_label=False`` checks a batch without label columns
    (scoring requests); ``reference`` adds statistical bounds from a known-good month; ``as_of`` (the
    export's date) refuses anything dated after it.
    """
    return contract.validate(batch, name, require_label=require_label, reference=reference, as_of=as_of)


def quarantine(path: str | Path, report: ValidationReport, folder: str | Path) -> Path:
    """Move the batch file at ``path`` into ``folder`` with its report beside it; returns the report's path.

    The file is moved, not deleted: someone can look at it, fix the export, and replay it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(path).name
    shutil.move(str(path), target)
    report_path = target.with_suffix(".report.md")
    report_path.write_text(f"Quarantined: `{Path(path).name}` did not reach training.\n\n{report.to_markdown()}\n")
    return report_path


# ---- one retrain at a time -----------------------------------------------------------------------------------
class RetrainGuard:
    """A lock that disables the retraining trigger while a retrain runs.

    >>> guard = RetrainGuard(workspace / "retrain.lock")
    >>> if guard.acquire("drift alarm on 2024-05"):   # False (and counted) if a retrain is already running
    ...     try: retrain()
    ...     finally: guard.release()

    The lock is the operating system's (``fcntl.flock`` on the file, exclusive, non-blocking): two processes
    cannot both hold it, it lasts exactly as long as its holder (a retrain of any length keeps it; no timeout
    can expire it under a running retrain), and the kernel frees it when the holder dies, crash or kill
    included, so a dead retrain never blocks the next one. The file records who holds it and why.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.suppressed: list[str] = []
        self._held = None          # the open file whose lock this guard holds

    @property
    def busy(self) -> bool:
        """Whether a retrain (in this process or another) holds the lock now."""
        if self._held is not None:
            return True
        probe = self._try_lock()
        if probe is None:
            return True
        probe.close()
        return False

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text()) if self.busy else None
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def acquire(self, reason: str) -> bool:
        handle = None if self._held is not None else self._try_lock()
        if handle is None:
            self.suppressed.append(reason)
            return False
        handle.truncate(0)
        handle.write(json.dumps({"reason": reason, "since": time.time(), "pid": os.getpid()}))
        handle.flush()
        self._held = handle
        return True

    def release(self) -> None:
        if self._held is not None:
            self._held.truncate(0)
            self._held.close()           # closing the file releases the lock
            self._held = None

    def _try_lock(self):
        """The lock file opened and locked, or None if someone holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle


# ---- a simulated year on the book's clock ------------------------------------------------------------------
POLICIES = ("none", "scheduled", "drift", "performance")
ALARM, OK, INSUFFICIENT = "ALARM", "OK", "INSUFFICIENT_DATA"


@dataclass(frozen=True)
class YearConfig:
    """A simulated year of weekly decisions on the book's clock: every lag comes from the data.

    On the Monday of each week the monitors look at what is known that day, a triggered retrain starts
    (learning from the newest ``train_months`` application months whose every ``label`` is known that day:
    :func:`~mlops_lab.simulator.newest_complete_month`), and the week's applications are scored by whichever
    model serves. A retrain started on the Monday of week w serves from week w + ``deploy_weeks``.
    """

    start: str = "2024-01-01"     # the Monday of the first week served
    weeks: int = 52
    label: str = TARGET           # what a model learns from: TARGET (12-month default) or EARLY_LABEL
    train_months: int = 3         # the newest 3 complete application months of that label
    deploy_weeks: int = 2         # retrain, gate and canary take two weeks
    every_weeks: int = 4          # the scheduled policy retrains every 4 weeks
    evaluation_periods: int = 3   # both alarms are M of N: ALARM when 2 of the last 3 weekly checks breach
    datapoints_to_alarm: int = 2
    alpha: float = 0.05           # input drift: a feature drifted when its Holm-corrected test says so
    correction: str = "holm"
    monitor_label: str = EARLY_LABEL  # performance: AUC on this label, on the latest applications whose
    monitor_weeks: int = 4            # every such label is in (4 weeks of them), breaches when it is more
    z: float = 2.5                    # than z standard errors (of the difference) below the model's AUC on the
                                      # loans it learned from: a one-sided 0.6 % chance per week in a stable world

    def __post_init__(self):
        for name in ("label", "monitor_label"):
            if getattr(self, name) not in LABELS:
                raise ValueError(f"YearConfig.{name} must be one of {list(LABELS)}, got {getattr(self, name)!r}")
        if self.monitor_label == TARGET and self.label != TARGET:
            raise ValueError("a model that learns from the early label cannot be baselined on the 12-month "
                             "outcome of its own training months: they are not known yet (monitor EARLY_LABEL)")
        for name in ("weeks", "train_months", "every_weeks", "monitor_weeks"):
            if getattr(self, name) < 1:
                raise ValueError(f"YearConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.deploy_weeks < 0 or not 1 <= self.datapoints_to_alarm <= self.evaluation_periods:
            raise ValueError("need deploy_weeks >= 0 and 1 <= datapoints_to_alarm <= evaluation_periods")


def alarm_state(breaches: list, datapoints_to_alarm: int, evaluation_periods: int) -> str:
    """The state of an M-of-N alarm after the weekly checks in ``breaches`` (True, False, or None: no data).

    The same rule as :class:`~mlops_lab.monitoring.AlarmRule` for data without gaps (the tests check they
    agree), kept incremental here so a simulated year stays fast.
    """
    window = breaches[-evaluation_periods:]
    seen = [b for b in window if b is not None]
    if sum(seen) >= datapoints_to_alarm:
        return ALARM
    if len(window) < evaluation_periods or not seen:
        return INSUFFICIENT
    return OK


def _month_of(date: pd.Timestamp) -> int:
    return (pd.Timestamp(date).to_period("M") - START).n


# A model is a function of its training rows, and a month's rows are a function of (seed, rows, month, the
# drift's levels that month): two worlds that differ only after the training months (a downturn and a pure
# concept drift that start the same month) train the same model on them. Kept across calls, bounded.
_FITS: dict[tuple, object] = {}
_FITS_MAX = 256
_MONTHS: dict[tuple, pd.DataFrame] = {}
_MONTHS_MAX = 48                  # about 1 MB a month of 3,000 rows


def _world_key(stream: CreditStream, month: int) -> tuple:
    return (stream.seed, stream.rows_per_month, int(month), tuple(sorted(stream.drift.levels(month).items())))


def _months(stream: CreditStream, months: range) -> pd.DataFrame:
    """``stream.months(months)``, reusing a month another world drew identically (before its drift starts)."""
    frames = []
    for m in months:
        key = _world_key(stream, m)
        frame = _MONTHS.pop(key, None)
        if frame is None:
            frame = stream.month(m)
        _MONTHS[key] = frame                        # most recently used last: the oldest is evicted first
        while len(_MONTHS) > _MONTHS_MAX:
            _MONTHS.pop(next(iter(_MONTHS)))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _fit(stream: CreditStream, months: range, learned: pd.DataFrame, as_of, label: str):
    key = (label, *(_world_key(stream, m) for m in months))
    model = _FITS.pop(key, None)
    if model is None:
        model = train(learned, as_of=as_of, label=label)
    else:
        check_known(learned, as_of, label)       # the same rows, and still no label from after as_of
    _FITS[key] = model                           # most recently used last: the oldest is evicted first
    while len(_FITS) > _FITS_MAX:
        _FITS.pop(next(iter(_FITS)))
    return model


@dataclass
class _Model:
    """One trained model of the simulated year and what its monitors need, computed once."""

    label: str
    months: range                 # the application months it learned from
    trained_as_of: pd.Timestamp
    model: object
    reference: slice              # every application of those months, declined ones too (rows of the history)
    baseline: tuple               # its AUC on ``monitor_label`` over the loans of those months, and its SE
    scores: np.ndarray            # P(default) for each row of the year's history
    detector: DriftDetector | None = None   # fitted on the reference when an input monitor first needs it


def _design(frame: pd.DataFrame) -> dict:
    """The features as arrays, once per history: numbers as a matrix, each category as (its names, codes)."""
    categorical = {column: pd.Categorical(frame[column].astype(str)) for column in CATEGORICAL}
    return {"numeric": frame[NUMERIC].to_numpy(dtype=float),
            **{column: (np.asarray(c.categories), c.codes) for column, c in categorical.items()}}


def _score_all(pipeline, frame: pd.DataFrame, design: dict) -> np.ndarray:
    """``pipeline.predict_proba(frame[FEATURES])[:, 1]``, computed from the fitted coefficients in one pass.

    The credit model is a standard scaler and a one-hot encoder before a logistic regression, so its score is
    sigmoid(b + w . (x - mean) / scale + the weight of each category): the same numbers (the tests check)
    without the pipeline's per-call overhead, which dominated a simulated year. Any other pipeline is scored
    by ``predict_proba``.
    """
    features, classifier = pipeline.named_steps.get("features"), pipeline.named_steps.get("classifier")
    expected = [f"numeric__{c}" for c in NUMERIC]
    names = list(features.get_feature_names_out()) if features is not None else []
    if names[:len(NUMERIC)] != expected or not hasattr(classifier, "coef_") or classifier.coef_.shape[0] != 1:
        return pipeline.predict_proba(frame[FEATURES])[:, 1]
    scaler, encoder = features.named_transformers_["numeric"], features.named_transformers_["categorical"]
    coef = classifier.coef_[0]
    weights = coef[:len(NUMERIC)] / scaler.scale_
    z = classifier.intercept_[0] - weights @ scaler.mean_ + design["numeric"] @ weights
    at = len(NUMERIC)
    for column, categories in zip(encoder.feature_names_in_, encoder.categories_):
        table = dict(zip(categories, coef[at:at + len(categories)]))
        at += len(categories)
        names, codes = design[column]
        z += np.array([table.get(name, 0.0) for name in names])[codes]   # unseen: 0, as in the encoder
    return 1.0 / (1.0 + np.exp(-z))


class SimulatedYear:
    """One world's year on the book's clock, shared by every policy run in it.

    ``SimulatedYear(stream, config).run(policy, label)`` serves the year under one policy (see
    :func:`simulate_year`); :meth:`compare` runs several. The history (every application from the first
    month any model may learn from to the year's end, sorted by date) is drawn once, each model is trained
    once (a retrain on any day with the same newest complete month learns from the same rows, so it is the
    same model) and each monitor check is computed once per model and week, so four policies and two labels
    take seconds.
    """

    def __init__(self, stream: CreditStream, config: YearConfig):
        c = self.config = config
        self.stream = stream
        self.mondays = [pd.Timestamp(c.start) + pd.Timedelta(weeks=w) for w in range(c.weeks + 1)]
        first_model = min(newest_complete_month(self.mondays[0], label) for label in LABELS) - c.train_months + 1
        first_monitored = _month_of(self.mondays[0] - pd.DateOffset(months=OUTCOME_MONTHS + 1)
                                    - pd.Timedelta(weeks=c.monitor_weeks))
        first = max(EARLIEST_MONTH, min(first_model, first_monitored))
        last = _month_of(self.mondays[-1] - pd.Timedelta(days=1))
        # Sorted by application date, a date range of applications is a slice.
        h = self.history = (_months(stream, range(first, last + 1)).sort_values("application_date", kind="stable")
                            .reset_index(drop=True))
        self.applied = h["application_date"].to_numpy()
        self.month = h["month"].to_numpy()
        months, starts = np.unique(self.month, return_index=True)
        self.month_rows = {int(m): slice(int(i), int(j)) for m, i, j in zip(months, starts, np.r_[starts[1:], len(h)])}
        self.approved = h[APPROVED].to_numpy(dtype=bool)
        self.known = {label: h[KNOWN[label]].to_numpy() for label in LABELS}
        self.value = {label: h[label].fillna(0).to_numpy(dtype=int) for label in LABELS}
        self.labels = h[[*LABELS, *KNOWN.values()]]          # what check_known reads, without the features
        self._design = _design(h)
        # The retrospective look: the day every 12-month outcome of the loans served this year is known.
        served = self.loans(self.mondays[0], self.mondays[-1])
        self.review_as_of = pd.Timestamp(self.known[TARGET][served].max())
        self._models: dict[tuple, _Model] = {}
        self._checks: dict[tuple, dict] = {}

    def rows(self, low, high) -> slice:
        """The applications dated in [low, high), as a slice of the (date-sorted) history."""
        i, j = np.searchsorted(self.applied, [np.datetime64(pd.Timestamp(low)), np.datetime64(pd.Timestamp(high))])
        return slice(int(i), int(j))

    def loans(self, low, high) -> np.ndarray:
        """Row numbers of the approved loans among the applications dated in [low, high)."""
        rows = self.rows(low, high)
        return np.arange(rows.start, rows.stop)[self.approved[rows]]

    def known_rows(self, rows: np.ndarray, as_of, label: str) -> np.ndarray:
        """The subset of ``rows`` whose ``label`` the lender knows on ``as_of`` (approved, known by then)."""
        return rows[self.approved[rows] & (self.known[label][rows] <= np.datetime64(pd.Timestamp(as_of)))]

    def require_known(self, rows: np.ndarray, as_of, label: str) -> None:
        """:func:`~mlops_lab.simulator.check_known` for ``rows`` (a fast path when they are all known)."""
        if len(self.known_rows(rows, as_of, label)) != len(rows):
            check_known(self.labels.iloc[rows], as_of, label)      # raises LabelFromTheFuture, saying why

    def model(self, as_of: pd.Timestamp, label: str) -> tuple:
        """Train (or reuse) the model a retrain on ``as_of`` builds: the newest complete months of ``label``."""
        c = self.config
        newest = newest_complete_month(as_of, label)
        key = (label, newest)
        if key not in self._models:
            months = range(newest - c.train_months + 1, newest + 1)
            reference = slice(self.month_rows[months[0]].start, self.month_rows[months[-1]].stop)
            rows = np.arange(reference.start, reference.stop)
            learned = self.history.iloc[self.known_rows(rows, as_of, label)]
            fitted = _fit(self.stream, months, learned, as_of, label)    # train() refuses a label from after as_of
            scores = _score_all(fitted, self.history, self._design)
            # Its baseline: AUC on the monitor label over the loans it learned from (all known by then).
            monitored = self.known_rows(rows, as_of, c.monitor_label)
            baseline = auc_with_se(self.value[c.monitor_label][monitored], scores[monitored])
            self._models[key] = _Model(label, months, pd.Timestamp(as_of), fitted, reference, baseline, scores)
        return key

    def inputs(self, key: tuple, week: int) -> int:
        """Monday of ``week``: how many features of last week's applications drifted from model ``key``'s."""
        if (key, week, "inputs") not in self._checks:
            monday = self.mondays[week]
            last_week = self.history.iloc[self.rows(monday - pd.Timedelta(weeks=1), monday)]  # declined ones too
            m, c = self._models[key], self.config
            if m.detector is None:
                m.detector = DriftDetector(self.history.iloc[m.reference], NUMERIC, CATEGORICAL, alpha=c.alpha,
                                           correction=c.correction)
            self._checks[(key, week, "inputs")] = int(m.detector.compare(last_week)["drifted"].sum())
        return self._checks[(key, week, "inputs")]

    def performance(self, key: tuple, week: int) -> tuple[float, float]:
        """Monday of ``week``: model ``key``'s AUC on the monitor label as it has arrived, and its drop in SEs.

        The window is the latest ``monitor_weeks`` of applications whose every monitor label is known on that
        Monday (for the early label: the loans whose label arrived in those weeks).
        """
        if (key, week, "performance") not in self._checks:
            c, m, monday = self.config, self._models[key], self.mondays[week]
            label, known = c.monitor_label, self.known[c.monitor_label]
            # The first application still maturing on Monday: every loan applied for before it is labelled.
            day = np.datetime64(monday)
            maturing = self.applied[self.approved & (self.applied < day) & ~(known <= day)]
            complete_until = pd.Timestamp(maturing.min()) if len(maturing) else monday
            window = self.loans(complete_until - pd.Timedelta(weeks=c.monitor_weeks), complete_until)
            self.require_known(window, monday, label)
            auc, se = auc_with_se(self.value[label][window], m.scores[window])
            # The drop in standard errors of the difference (two independent AUCs: their variances add).
            drop_z = (m.baseline[0] - auc) / np.hypot(se, m.baseline[1]) if se > 0 else np.nan
            self._checks[(key, week, "performance")] = (auc, drop_z)
        return self._checks[(key, week, "performance")]

    def review(self, key: tuple, week: int) -> dict:
        """The week's loans scored by model ``key``, judged looking back from :attr:`review_as_of`."""
        if (key, week, "review") not in self._checks:
            served = self.loans(self.mondays[week], self.mondays[week + 1])
            self.require_known(served, self.review_as_of, TARGET)
            y, p = self.value[TARGET][served], self._models[key].scores[served]
            self._checks[(key, week, "review")] = {
                "auc": auc_with_se(y, p)[0], "accuracy": float(np.mean((p >= 0.5) == y)),
                "default_rate": float(y.mean()), "loans": len(served)}
        return self._checks[(key, week, "review")]

    def run(self, policy, label: str | None = None) -> pd.DataFrame:
        """Serve the year under ``policy`` (a name in :data:`POLICIES` or a trigger function), learning ``label``.

        Each Monday: a retrain that is due goes live; the monitors the policy reads check what is known that
        day; the trigger decides; and the week's loans are scored by the model that serves them.
        """
        c = self.config
        triggers = {"none": lambda week: False,
                    "scheduled": lambda week: week["week"] > 0 and week["week"] % c.every_weeks == 0,
                    "drift": lambda week: week["input_alarm"] == ALARM,
                    "performance": lambda week: week["performance_alarm"] == ALARM}
        if callable(policy):
            name, trigger = getattr(policy, "__name__", "custom"), policy
        elif policy in triggers:
            name, trigger = policy, triggers[policy]
        else:
            raise ValueError(f"policy must be one of {POLICIES} or a function of the week's checks, got {policy!r}")
        # A policy reads only the monitors it needs (a function gets both): fewer checks, a faster year.
        watch_inputs = callable(policy) or name == "drift"
        watch_performance = callable(policy) or name == "performance"
        label = label or c.label
        key, version, pending = self.model(self.mondays[0], label), 1, None   # pending: (live week, model)
        input_breaches, performance_breaches, rows = [], [], []
        for week, monday in enumerate(self.mondays[:-1]):
            if pending is not None and week >= pending[0]:     # a retrained model goes live: new baselines
                key, version, pending = pending[1], version + 1, None
                input_breaches, performance_breaches = [], []
            check = {"week": week, "date": monday, "drifted_features": np.nan, "input_alarm": "",
                     "monitored_auc": np.nan, "auc_drop_z": np.nan, "performance_alarm": ""}
            if watch_inputs:
                drifted = self.inputs(key, week)
                input_breaches.append(drifted > 0)
                check.update(drifted_features=drifted, input_alarm=alarm_state(
                    input_breaches, c.datapoints_to_alarm, c.evaluation_periods))
            if watch_performance:
                auc, drop_z = self.performance(key, week)
                performance_breaches.append(None if np.isnan(drop_z) else bool(drop_z > c.z))
                check.update(monitored_auc=auc, auc_drop_z=drop_z, performance_alarm=alarm_state(
                    performance_breaches, c.datapoints_to_alarm, c.evaluation_periods))
            started = suppressed = False
            learns_to = ""
            if trigger(dict(check)):
                if pending is None:                            # learn what is known this Monday
                    new_key = self.model(monday, label)
                    pending, started, learns_to = (week + c.deploy_weeks, new_key), True, month_label(new_key[1])
                else:
                    suppressed = True                          # the guard: a retrain is already under way
            rows.append({**check, "policy": name, "label": label, "version": version,
                         "learned_to": month_label(self._models[key].months[-1]), **self.review(key, week),
                         "retrain_started": started, "retrain_learns_to": learns_to, "suppressed": suppressed})
        out = pd.DataFrame(rows).set_index("week")
        out.attrs["review_as_of"] = self.review_as_of
        return out

    def compare(self, policies=POLICIES, labels=None) -> pd.DataFrame:
        """:meth:`run` for every policy and every training label (default: the config's), stacked."""
        out = pd.concat([self.run(policy, label) for label in (labels or (self.config.label,))
                         for policy in policies])
        out.attrs["review_as_of"] = self.review_as_of
        return out


def simulate_year(stream: CreditStream, policy, config: YearConfig = YearConfig()) -> pd.DataFrame:
    """Serve a year of weekly applications under ``policy``; one row per served week.

    ``policy`` is a name or a trigger: a function of the week's checks (a dict with ``week``, ``date``,
    ``input_alarm`` and ``performance_alarm``, each alarm ``"OK"``, ``"ALARM"`` or ``"INSUFFICIENT_DATA"``)
    that returns True to start a retrain. ``none`` keeps the first model; ``scheduled`` retrains every
    ``config.every_weeks`` weeks; ``drift`` retrains when the input alarm fires (any feature of last week's
    applications drifted from the serving model's training applications, Holm-corrected tests, in M of N
    weeks); ``performance`` retrains when the performance alarm fires (AUC on ``config.monitor_label`` as it
    arrives, more than ``config.z`` standard errors below the model's AUC on the loans it learned from, in M
    of N weeks). Every retrain learns ``config.label`` from the newest ``config.train_months`` months whose
    every label is known that day; a trigger while a retrain is pending is suppressed (the guard). Every
    model learns only from labels known on the day it is trained and every monitor only from labels known on
    its Monday; the columns ``auc``, ``accuracy`` and
    ``default_rate`` judge the week's loans *looking back* from ``result.attrs["review_as_of"]``, the day
    every one of their 12-month outcomes is known: an analysis, not something the lender knew then.
    """
    return SimulatedYear(stream, config).run(policy)


def compare_policies(stream: CreditStream, config: YearConfig = YearConfig(), policies=POLICIES,
                     labels=None) -> pd.DataFrame:
    """:func:`simulate_year` for every policy and every training label, on one shared history (stacked)."""
    return SimulatedYear(stream, config).compare(policies, labels)


# ---- the live loop's canary step ------------------------------------------------------------------------------
def canary_release(router_url: str, green_url: str, bodies, *, canary_size: float = 0.2, bake_s: float = 2.0,
                   final_bake_s: float = 1.0, alarms=({"metric": "error_rate", "threshold": 0.05},),
                   rate: float = 60.0, timeout_s: float = 60.0, admin_token: str = "") -> dict:
    """Point the router's green at ``green_url``, start a canary deployment and drive traffic until it ends.

    ``admin_token`` is the router's admin token (:func:`mlops_lab.router.read_admin_token`).

    The router's own state machine (chapter 10) does the work: ``canary_size`` of the traffic to green, a
    bake watched by ``alarms``, then all of it, another bake, and the blue/green switch; any alarm rolls all
    traffic back to blue. Returns the outcome (``promoted`` or ``rolled_back``), the router's events and a
    summary of the client's view (requests, errors, green's share).
    """
    from .loadgen import run_load, summarize
    from .router import admin_post, admin_state

    def admin(path, spec):
        status, answer = admin_post(router_url, path, admin_token, **spec)
        if status != 200:
            raise RuntimeError(f"router refused /admin/{path}: {answer}")
        return answer

    admin("backends", {"green": green_url})
    admin("deploy", {"strategy": "canary", "canary_size": canary_size, "bake_s": bake_s,
                     "final_bake_s": final_bake_s, "alarms": list(alarms)})
    started = time.time()

    def finished():
        phase = admin_state(router_url, admin_token)["deployment"]["phase"]
        return phase in ("promoted", "rolled_back") or time.time() - started > timeout_s

    log = run_load(router_url, bodies, rate=rate, stop=finished, concurrency=2)
    state = admin_state(router_url, admin_token)
    return {"outcome": state["deployment"]["phase"], "green_weight": state["green_weight"],
            "events": [e for e in state["events"] if e["t"] >= started - 1],
            "client": summarize(log), "green_share": float((log["variant"] == "green").mean()) if len(log) else 0.0}
