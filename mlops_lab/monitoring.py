"""Monitoring a model in production: metrics scraped from servers, delayed labels, alarms, and a report.

- :func:`scrape` / :func:`parse_metrics` read the Prometheus text format that the router and the model
  server expose on ``/metrics`` (with ``prometheus_client.parser``) into a tidy DataFrame, and
  :func:`histogram_quantile` estimates a latency percentile from histogram buckets the way Prometheus does.
- :func:`label_feed` is the servicing feed of one of the simulator's labels: one row per *approved* loan with
  its label and the date it becomes known (declined applicants never get one). :func:`join_labels` joins
  captured predictions with that feed *as of* a date (only labels known then), and :func:`rolling_metrics`
  computes accuracy and AUC per window with their uncertainty (Wilson interval for accuracy; Hanley-McNeil
  standard error for AUC, :func:`auc_se`), because a window of 200 labelled loans says much less than one of
  5,000. Both require ``as_of`` and refuse anything from after it: a prediction not yet made, or a label not
  yet known (:class:`~mlops_lab.simulator.LabelFromTheFuture`).
- :class:`AlarmRule` is a CloudWatch-style alarm: a statistic over each ``period``, compared with a
  ``threshold``; ALARM when ``datapoints_to_alarm`` of the last ``evaluation_periods`` periods breach ("M out
  of N"), INSUFFICIENT_DATA before there are N periods, missing periods treated as CloudWatch's
  ``treat_missing_data`` says.
- :func:`counter_increase` and :func:`history_frame` turn successive scrapes into rates the way Prometheus's
  ``rate()`` does, treating a counter that drops as a restart of the process that counted it.
- :func:`psi` compares the share of scores per bucket of the router's ``router_prediction`` histogram with
  a reference; :func:`psi_threshold` derives the alarm threshold from the sampling noise of a period's
  counts, and :func:`prediction_psi` gives one PSI per scrape interval for an :class:`AlarmRule`.
- :func:`markdown_report` writes the Markdown report that CML would post on a pull request (a metrics
  table, alarm states, plots), and :func:`report_html` renders it (plots inlined) to show it in a notebook.
"""
from __future__ import annotations

import base64
import io
import math
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .simulator import APPROVED, KNOWN, TARGET, LabelFromTheFuture, as_of_date

# ---- Prometheus -----------------------------------------------------------------------------------------


def parse_metrics(text: str) -> pd.DataFrame:
    """Prometheus exposition text -> one row per sample: ``name``, ``labels`` (a dict), ``value``, ``type``.

    Histogram samples keep their suffixes (``_bucket`` with an ``le`` label, ``_sum``, ``_count``).
    """
    from prometheus_client.parser import text_string_to_metric_families

    rows = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            rows.append({"family": family.name, "type": family.type, "name": sample.name,
                         "labels": dict(sample.labels), "value": float(sample.value)})
    return pd.DataFrame(rows, columns=["family", "type", "name", "labels", "value"])


def scrape(url: str, timeout: float = 5) -> pd.DataFrame:
    """GET ``url`` (a ``/metrics`` endpoint) and parse it; what a Prometheus server does every 15 s."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode())


def metric_value(samples: pd.DataFrame, name: str, **labels) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0.0 when there are none)."""
    chosen = samples[samples["name"] == name]
    if labels:
        chosen = chosen[[all(s.get(k) == str(v) for k, v in labels.items()) for s in chosen["labels"]]]
    return float(chosen["value"].sum())


def histogram_buckets(samples: pd.DataFrame, name: str, **labels) -> pd.Series:
    """Cumulative bucket counts of histogram ``name`` (summed over other labels), indexed by upper bound."""
    chosen = samples[samples["name"] == f"{name}_bucket"]
    if labels:
        chosen = chosen[[all(s.get(k) == str(v) for k, v in labels.items()) for s in chosen["labels"]]]
    bounds = [float(s["le"]) for s in chosen["labels"]]
    return pd.Series(chosen["value"].to_numpy(), index=bounds).groupby(level=0).sum().sort_index()


def histogram_quantile(q: float, buckets: pd.Series) -> float:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket that holds quantile q.

    ``buckets``: cumulative counts indexed by upper bound, ending with +Inf. If the quantile falls in the
    +Inf bucket, the highest finite bound is returned (Prometheus does the same). NaN with no observations.
    """
    bounds, counts = buckets.index.to_numpy(float), buckets.to_numpy(float)
    if len(counts) == 0 or counts[-1] == 0:
        return float("nan")
    rank = q * counts[-1]
    i = int(np.searchsorted(counts, rank, side="left"))
    if i >= len(bounds) - 1 and math.isinf(bounds[-1]):
        return float(bounds[-2]) if len(bounds) > 1 else float("nan")
    lower_bound = 0.0 if i == 0 else bounds[i - 1]
    lower_count = 0.0 if i == 0 else counts[i - 1]
    inside = counts[i] - lower_count
    if inside <= 0:
        return float(bounds[i])
    return float(lower_bound + (bounds[i] - lower_bound) * (rank - lower_count) / inside)


def counter_increase(before, after):
    """How much a counter (a number) or a histogram's buckets (a Series) grew between two scrapes.

    A counter only goes up while its process lives, so a drop means the process restarted and counted
    ``after`` from zero: Prometheus's ``increase()`` and ``rate()`` do the same, instead of reporting a
    negative rate. A histogram restarts as a whole, so one bucket that dropped resets them all.
    """
    if isinstance(after, pd.Series):
        before = before.reindex(after.index, fill_value=0.0)  # a series first seen after the earlier scrape
        return after.copy() if (after < before).any() else after - before
    return after if after < before else after - before


def router_snapshot(samples: pd.DataFrame, t: float) -> dict:
    """The router's counters a dashboard needs, from one scrape taken at time ``t`` (seconds)."""
    codes = samples[samples["name"] == "router_requests_total"]
    errors = codes[[labels.get("code", "").startswith(("4", "5")) for labels in codes["labels"]]]
    return {"t": t, "requests": codes["value"].sum(), "errors": errors["value"].sum(),
            "latency": histogram_buckets(samples, "router_request_duration_seconds"),
            "scores": histogram_buckets(samples, "router_prediction")}


def history_frame(snapshots: list[dict]) -> pd.DataFrame:
    """Rates between consecutive :func:`router_snapshot` s: what Prometheus's ``rate()`` and
    ``histogram_quantile()`` would give, a restart of the router included (:func:`counter_increase`)."""
    rows = []
    for before, after in zip(snapshots, snapshots[1:]):
        dt, requests = after["t"] - before["t"], counter_increase(before["requests"], after["requests"])
        errors = counter_increase(before["errors"], after["errors"])
        latency = counter_increase(before["latency"], after["latency"])
        rows.append({"t": after["t"] - snapshots[0]["t"], "rps": requests / dt,
                     "error_rate": errors / requests if requests else np.nan,
                     "p95_ms": histogram_quantile(0.95, latency) * 1e3})
    return pd.DataFrame(rows, columns=["t", "rps", "error_rate", "p95_ms"])


# ---- prediction drift from the router's score histogram ----------------------------------------------------


def bucket_counts(cumulative: pd.Series) -> pd.Series:
    """A histogram's cumulative bucket counts (indexed by upper bound) -> the count inside each bucket."""
    return cumulative.diff().fillna(cumulative.iloc[0]) if len(cumulative) else cumulative


def psi(reference, current, pseudo_count: float = 0.5):
    """Population stability index of ``current`` against ``reference``, both counts per bucket.

    ``sum((c - r) * ln(c / r))`` over the buckets' shares. Each bucket gets ``pseudo_count`` observations
    first, so a bucket that one side never filled gives a large but finite term instead of infinity.
    Series are aligned on their index (bucket upper bounds); arrays may hold many rows (one PSI per row).
    """
    if isinstance(reference, pd.Series) and isinstance(current, pd.Series):
        current = current.reindex(reference.index, fill_value=0.0)
    r = np.asarray(reference, float) + pseudo_count
    c = np.asarray(current, float) + pseudo_count
    r, c = r / r.sum(axis=-1, keepdims=True), c / c.sum(axis=-1, keepdims=True)
    value = ((c - r) * np.log(c / r)).sum(axis=-1)
    return float(value) if np.ndim(value) == 0 else value


def psi_threshold(reference: pd.Series, n: int, false_breach_rate: float = 0.01, draws: int = 20_000,
                  seed: int = 0) -> float:
    """The PSI that a period of ``n`` scores exceeds with probability ``false_breach_rate`` without drift.

    Simulated: a reference and a period drawn from the same distribution (the reference's shares), each with
    its own sampling noise, so the threshold is what chance alone gives at these counts, not a rule of thumb.
    """
    rng = np.random.default_rng(seed)
    shares = (reference / reference.sum()).to_numpy(float)
    simulated = psi(rng.multinomial(int(round(reference.sum())), shares, size=draws),
                    rng.multinomial(n, shares, size=draws))
    return float(np.quantile(simulated, 1 - false_breach_rate))


def prediction_psi(scrapes: Mapping[pd.Timestamp, pd.Series], reference: pd.Series) -> pd.Series:
    """PSI of the scores served between consecutive scrapes against ``reference`` (counts per bucket).

    ``scrapes``: time -> the score histogram's cumulative buckets at that scrape (:func:`histogram_buckets`
    of ``router_prediction``, one variant). Each value is indexed by the later scrape's time; a restart of
    the router between two scrapes counts what the new process served (:func:`counter_increase`).
    """
    times = sorted(scrapes)
    values = {after: psi(reference, bucket_counts(counter_increase(scrapes[before], scrapes[after])))
              for before, after in zip(times, times[1:])}
    return pd.Series(values, dtype=float, name="psi")


# ---- data capture -----------------------------------------------------------------------------------------
CAPTURE_KEYS = ("schema", "ts", "request_id", "variant", "shadow", "status", "latency_ms", "model_version",
                "inputs", "predictions")


def read_capture(path: str | Path) -> pd.DataFrame:
    """The router's data-capture file (JSON lines) -> one row per *scored row*.

    Columns: ``request_id``, ``row`` (its position in the request), ``ts``, ``variant``, ``shadow``,
    ``status``, ``latency_ms``, ``model_version``, every input column, and ``score`` (P(default); a model
    that returns both class probabilities contributes the second). A line missing a key of
    :data:`CAPTURE_KEYS` raises: a capture that silently changed shape would poison every report built on it.
    A last line still being written (no newline yet) is left for the next read.
    """
    import json

    text = Path(path).read_text()
    if not text.endswith("\n"):  # the router is appending a batch right now: its last line is not whole yet
        text = text[:text.rfind("\n") + 1]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        missing = [k for k in CAPTURE_KEYS if k not in record]
        if missing:
            raise ValueError(f"capture line {number} lacks {missing}: not the router's schema {record.get('schema')}")
        meta = {k: record[k] for k in CAPTURE_KEYS if k not in ("inputs", "predictions", "schema")}
        predictions = record["predictions"] or [None] * len(record["inputs"])
        for i, (inputs, score) in enumerate(zip(record["inputs"], predictions)):
            if isinstance(score, list):  # [P(class 0), P(class 1)]
                score = score[-1]
            rows.append({**meta, "row": i, **inputs, "score": score})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s")
    return frame


# ---- delayed labels and model quality --------------------------------------------------------------------


def label_feed(batch: pd.DataFrame, label: str = TARGET, key: str = "application_id") -> pd.DataFrame:
    """The servicing feed of ``label`` for a :class:`~mlops_lab.simulator.CreditStream` batch.

    One row per approved loan: ``key``, ``application_date``, ``label`` (0/1) and ``label_time`` (the date the
    lender learns it: the simulator's ``default_known`` or ``early_delinquency_known``). Declined applicants
    have no row: the lender never observes the outcome of a loan it did not make. The feed holds labels
    that arrive after any given date; :func:`join_labels` reads only those known by its ``as_of``.
    """
    if label not in KNOWN:
        raise ValueError(f"label must be one of {list(KNOWN)}, got {label!r}")
    missing = {key, "application_date", APPROVED, label, KNOWN[label]} - set(batch.columns)
    if missing:
        raise ValueError(f"label_feed needs a CreditStream batch; missing {sorted(missing)}")
    loans = batch.loc[batch[APPROVED].to_numpy(dtype=bool)]
    if loans[label].isna().any() or loans[KNOWN[label]].isna().any():
        raise ValueError(f"an approved loan without {label!r} or its date: not a CreditStream batch")
    return pd.DataFrame({key: loans[key].to_numpy(), "application_date": loans["application_date"].to_numpy(),
                         "label": loans[label].to_numpy(dtype=np.int8),
                         "label_time": loans[KNOWN[label]].to_numpy()})


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame, *, as_of, key: str = "application_id",
                time: str = "timestamp", label_time: str = "label_time") -> pd.DataFrame:
    """Captured predictions with the ground truth known on ``as_of`` (required).

    ``predictions`` need ``key`` and ``time`` (when the prediction was made); a prediction made after
    ``as_of`` does not exist yet on that date, so it raises. ``labels`` need ``key``, ``label`` and
    ``label_time`` (the date each label became known, as :func:`label_feed` gives them); only labels with
    ``label_time <= as_of`` are joined. A prediction whose label has not arrived (or never will: a declined
    applicant) keeps ``label`` = NaN: it must not count as right or wrong, and the share that is labelled
    (the *coverage*) is itself worth watching.
    """
    as_of = as_of_date(as_of)
    for frame, name, columns in ((predictions, "predictions", (key, time)), (labels, "labels",
                                                                              (key, "label", label_time))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lack the column(s) {missing}")
    made = pd.to_datetime(predictions[time])
    if (made > as_of).any():
        raise ValueError(f"{int((made > as_of).sum())} predictions were made after as_of={as_of.date()}: on that "
                         f"date they do not exist yet; select predictions[{time!r}] <= as_of")
    arrived = pd.to_datetime(labels[label_time])
    known = labels.loc[arrived.notna() & (arrived <= as_of), [key, "label", label_time]]
    return predictions.merge(known, on=key, how="left", validate="one_to_one")


def check_labels_known(joined: pd.DataFrame, as_of, *, time: str = "timestamp",
                       label_time: str = "label_time") -> None:
    """Raise unless every label in ``joined`` was known on ``as_of`` and no prediction is from after it.

    :class:`~mlops_lab.simulator.LabelFromTheFuture` for a label known after ``as_of`` (or without the date
    it became known); ``ValueError`` for a prediction made after ``as_of``.
    """
    as_of = as_of_date(as_of)
    if label_time not in joined.columns:
        raise ValueError(f"joined has no {label_time!r} column: join the labels with join_labels(..., as_of=...)")
    labelled = joined["label"].notna()
    arrived = pd.to_datetime(joined.loc[labelled, label_time])
    late = arrived.isna() | (arrived > as_of)
    if late.any():
        raise LabelFromTheFuture(
            f"{int(late.sum())} of {int(labelled.sum())} labels were not known on {as_of.date()} (the latest "
            f"arrived {'-' if arrived.isna().all() else arrived.max().date()}): join with join_labels(..., "
            f"as_of={as_of.date()})")
    made = pd.to_datetime(joined[time])
    if (made > as_of).any():
        raise ValueError(f"{int((made > as_of).sum())} predictions were made after as_of={as_of.date()}")


def wilson_interval(successes, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion: sensible even at 0 or n successes and small n."""
    successes, n = np.asarray(successes, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def auc_se(auc, n_pos, n_neg):
    """Hanley and McNeil's (1982) standard error of an AUC from ``n_pos`` positives and ``n_neg`` negatives.

    Works on arrays; use it to plan a monitor (how wide will a week's interval be?) before any data exists.
    """
    auc, n_pos, n_neg = np.asarray(auc, float), np.asarray(n_pos, float), np.asarray(n_neg, float)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    se = np.sqrt(np.maximum(var, 0.0))
    return float(se) if se.ndim == 0 else se


def auc_with_se(y_true, score) -> tuple[float, float]:
    """ROC AUC (ties count one half) and its Hanley-McNeil (1982) standard error; NaNs if one class only."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    ranks = stats.rankdata(s)
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc), auc_se(auc, n_pos, n_neg)


def rolling_metrics(joined: pd.DataFrame, *, as_of, window: str = "7D", time: str = "timestamp",
                    score: str = "score", threshold: float = 0.5, z: float = 1.96, origin="start_day",
                    label_time: str = "label_time") -> pd.DataFrame:
    """Accuracy and AUC per ``window`` of prediction time, on the rows whose label was known on ``as_of``.

    ``joined`` comes from :func:`join_labels` with the same ``as_of`` (required): a label known later, or a
    prediction made later, raises (:func:`check_labels_known`). Windows start at ``origin`` (a timestamp,
    or pandas' "start_day": midnight of the first prediction); pass the start of the period so the windows
    do not move with which requests were sampled.

    Columns: predictions, n (labelled), coverage (labelled share), accuracy with its Wilson interval, auc
    with a normal interval from the Hanley-McNeil standard error.
    """
    check_labels_known(joined, as_of, time=time, label_time=label_time)
    frame = joined.set_index(pd.to_datetime(joined[time])).sort_index()
    rows = []
    for start, group in frame.groupby(pd.Grouper(freq=window, origin=origin)):
        labelled = group[group["label"].notna()]
        y = labelled["label"].to_numpy(int)
        right = int(((labelled[score].to_numpy() >= threshold) == y).sum())
        low, high = wilson_interval(right, len(labelled), z)
        auc, se = auc_with_se(y, labelled[score]) if len(labelled) else (float("nan"), float("nan"))
        rows.append({"window_start": start, "predictions": len(group), "n": len(labelled),
                     "coverage": len(labelled) / len(group) if len(group) else float("nan"),
                     "accuracy": right / len(labelled) if len(labelled) else float("nan"),
                     "accuracy_low": float(low), "accuracy_high": float(high),
                     "auc": auc, "auc_low": auc - z * se, "auc_high": auc + z * se})
    return pd.DataFrame(rows).set_index("window_start")


# ---- CloudWatch-style alarms ------------------------------------------------------------------------------
COMPARISONS = {
    "GreaterThanThreshold": np.greater, "GreaterThanOrEqualToThreshold": np.greater_equal,
    "LessThanThreshold": np.less, "LessThanOrEqualToThreshold": np.less_equal,
}
STATISTICS = ("mean", "sum", "max", "min", "count", "p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class AlarmRule:
    """A CloudWatch-style metric alarm.

    Each ``period`` (a pandas frequency such as ``"1min"`` or ``"1D"``) reduces the metric's data points to
    one value with ``statistic``; a period *breaches* when ``value <comparison> threshold``. The alarm is
    in ALARM when at least ``datapoints_to_alarm`` of the last ``evaluation_periods`` periods breach (M out
    of N), OK otherwise, and INSUFFICIENT_DATA until N periods have been seen (or when none of the last N
    has data). A period with no data is handled by ``treat_missing_data``: ``"missing"`` (neither breaches
    nor not; while the missing periods could still make M breaches, the state stays as it was), ``"notBreaching"``, ``"breaching"``, or ``"ignore"`` (keep the previous state).
    """

    name: str
    threshold: float
    period: str = "1min"
    evaluation_periods: int = 3
    datapoints_to_alarm: int = 3
    comparison: str = "GreaterThanThreshold"
    statistic: str = "mean"
    treat_missing_data: str = "missing"

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {list(COMPARISONS)}, got {self.comparison!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if not 1 <= self.datapoints_to_alarm <= self.evaluation_periods:
            raise ValueError("need 1 <= datapoints_to_alarm <= evaluation_periods "
                             f"(got {self.datapoints_to_alarm} of {self.evaluation_periods})")
        if self.treat_missing_data not in ("missing", "notBreaching", "breaching", "ignore"):
            raise ValueError(f"unknown treat_missing_data {self.treat_missing_data!r}")

    def datapoints(self, series: pd.Series) -> pd.Series:
        """One value per period (NaN for a period without data)."""
        grouped = series.sort_index().resample(self.period)
        if self.statistic.startswith("p"):
            return grouped.quantile(int(self.statistic[1:]) / 100)
        values = getattr(grouped, self.statistic)()
        if self.statistic in ("sum", "count"):  # an empty period has no data, not a zero
            values = values.where(grouped.count() > 0)
        return values

    def evaluate(self, series: pd.Series) -> pd.DataFrame:
        """The alarm's state after every period of ``series`` (a metric indexed by time)."""
        values = self.datapoints(series)
        breach = pd.Series(COMPARISONS[self.comparison](values.to_numpy(), self.threshold), index=values.index)
        missing = values.isna()
        states, previous = [], "INSUFFICIENT_DATA"
        window: list[bool | None] = []
        for value_missing, breaching in zip(missing, breach):
            if value_missing:
                point = {"missing": None, "notBreaching": False, "breaching": True, "ignore": "skip"}[
                    self.treat_missing_data]
            else:
                point = bool(breaching)
            if point == "skip":
                states.append(previous)
                continue
            window = (window + [point])[-self.evaluation_periods:]
            seen = [p for p in window if p is not None]
            breaches, unknown = sum(seen), len(window) - len(seen)
            if breaches >= self.datapoints_to_alarm:
                state = "ALARM"
            elif len(window) < self.evaluation_periods or not seen:
                state = "INSUFFICIENT_DATA"  # not yet N periods, or every one of them without data
            elif breaches + unknown >= self.datapoints_to_alarm:
                state = previous  # the missing periods could tip it either way: keep the state
            else:
                state = "OK"
            states.append(state)
            previous = state
        return pd.DataFrame({"value": values, "breaching": breach & ~missing, "state": states})

    def transitions(self, series: pd.Series) -> pd.DataFrame:
        """Only the periods where the state changed: what CloudWatch would notify about."""
        table = self.evaluate(series)
        changed = table["state"] != table["state"].shift()
        return table[changed]

    def describe(self) -> str:
        op = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=", "LessThanThreshold": "<",
              "LessThanOrEqualToThreshold": "<="}[self.comparison]
        return (f"{self.name}: {self.statistic} over {self.period} {op} {self.threshold:g} for "
                f"{self.datapoints_to_alarm} of {self.evaluation_periods} periods")


# ---- CML-style report ---------------------------------------------------------------------------------------


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def markdown_report(title: str, metrics: pd.DataFrame, alarms: Mapping[str, str] | None = None,
                    figures: Mapping[str, str | Path] | None = None, notes: Iterable[str] = (),
                    floatfmt: str = ".3f") -> str:
    """The Markdown a CML job posts on a pull request (``cml comment create report.md``).

    ``metrics``: a table (rendered with DataFrame.to_markdown); ``alarms``: alarm name -> state (ALARM is
    marked so it stands out); ``figures``: caption -> image path *relative to the report* (CML uploads the
    images it finds and rewrites the links).
    """
    lines = [f"## {title}", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    shown = metrics.astype(object).where(metrics.notna(), None)  # ints stay ints; NaN shows as "-"
    lines += [shown.to_markdown(floatfmt=floatfmt, missingval="-"), ""]
    if alarms:
        lines += ["| alarm | state |", "|---|---|"]
        lines += [f"| {name} | {'**ALARM**' if state == 'ALARM' else state} |" for name, state in alarms.items()]
        lines.append("")
    for caption, path in (figures or {}).items():
        lines += [f"![{caption}]({Path(path).as_posix()})", ""]
    return "\n".join(lines)


def report_html(markdown: str, folder: str | Path) -> str:
    """Render the report as HTML, inlining its images from ``folder`` as data URIs (what the PR shows)."""
    import re

    from markdown_it import MarkdownIt

    def inline(match):
        path = Path(folder) / match.group(2)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    markdown = re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", inline, markdown)
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    return f'<div class="cml-report" style="border:1px solid #ccc;padding:0.5em 1em;">{html}</div>'


# ---- batch results for Prometheus ---------------------------------------------------------------------------
def batch_registry(values: Mapping[str, float], by_label: Mapping[str, pd.Series] | None = None,
                   label: str = "feature", help: Mapping[str, str] | None = None):
    """A batch job's results as Prometheus gauges in a fresh registry, to push to a Pushgateway.

    ``values`` are single numbers (``{"credit_input_drifted_features": 3}``); ``by_label`` holds one series per
    metric, one gauge per index value under ``label`` (``{"credit_input_drift_p_adjusted": report["p_adjusted"]}``).
    A NaN stays NaN: Prometheus stores it, and a comparison with it is false.
    """
    from prometheus_client import CollectorRegistry, Gauge

    registry, help = CollectorRegistry(), dict(help or {})
    for name, value in values.items():
        Gauge(name, help.get(name, name), registry=registry).set(float(value))
    for name, series in (by_label or {}).items():
        gauge = Gauge(name, help.get(name, name), [label], registry=registry)
        for key, value in series.items():
            gauge.labels(str(key)).set(float(value))
    return registry


class CheckHistory:
    """The newest ``keep`` results of a batch monitor, in a Pushgateway, one group per check.

    A weekly check (input drift, delayed accuracy) is a batch job: it runs, computes and exits, so there is
    nothing for Prometheus to scrape. It pushes its results to a Pushgateway instead (Prometheus' documented
    use of one: the outcome of a service-level batch job), grouped by ``job`` and ``check`` (the date it ran
    for), and deletes the groups older than the newest ``keep``. Prometheus then holds exactly the last
    ``keep`` checks, one series each, so an alert rule ``count(metric > 0) >= 2`` reads "in 2 of the last 3
    checks" (:func:`mlops_lab.alert_rules.batch_alerting_rule`) however far apart the checks ran in wall-clock
    time: a week at a lender, a second in a notebook.
    """

    def __init__(self, pushgateway, job: str, keep: int):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.pushgateway, self.job, self.keep = pushgateway, job, keep
        self.checks: list[str] = []

    def push(self, check: str, registry) -> list[str]:
        """Push one check's results (a registry, e.g. :func:`batch_registry`); returns the checks kept."""
        check = str(check)
        if check in self.checks:
            raise ValueError(f"check {check!r} was pushed already; a check is pushed once")
        self.pushgateway.push(self.job, registry, check=check)
        self.checks.append(check)
        while len(self.checks) > self.keep:
            self.pushgateway.delete(self.job, check=self.checks.pop(0))
        return list(self.checks)

    def clear(self) -> None:
        """Delete every check (a new baseline: the rule starts over, as after a new champion)."""
        for check in self.checks:
            self.pushgateway.delete(self.job, check=check)
        self.checks = []
