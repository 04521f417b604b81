"""The chapters' alarms as Prometheus alerting rules, SLO burn-rate alerts, and promtool to check and test them.

:func:`alerting_rule` turns a CloudWatch-style :class:`~mlops_lab.monitoring.AlarmRule` over a *stream* metric
(a gauge Prometheus scrapes) into an alerting rule; :func:`batch_alerting_rule` does the same for a batch job
that pushes one series per check to a Pushgateway; :func:`slo_rules` writes the Site Reliability Workbook's
multiwindow, multi-burn-rate alerts. :func:`rule_file`, :func:`rule_test`, :func:`promtool_check` and
:func:`promtool_test` write the YAML and run ``promtool`` (Prometheus 2.x) on it.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from prometheus_client.utils import floatToGoString

from mlops_lab.monitoring import AlarmRule
from mlops_lab.prometheus import find_tool
from mlops_lab.router import LATENCY_BUCKETS

OPERATORS = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=", "LessThanThreshold": "<",
             "LessThanOrEqualToThreshold": "<="}
RANGE_FUNCTIONS = {"mean": "avg_over_time", "max": "max_over_time", "min": "min_over_time",
                   "sum": "sum_over_time", "count": "count_over_time"}
UNITS_MS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
SELECTOR = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*(\{[^{}]*\})?$")


class RuleError(RuntimeError):
    """promtool refused a rule file or a rule test; the message is promtool's own."""


# ---- durations ------------------------------------------------------------------------------------------------


def period_ms(period: str) -> int:
    """A pandas frequency ("7D", "1min", "500ms") in milliseconds, or ValueError if none is exact.

    Calendar frequencies ("1ME" month end, "1W" weeks anchored on a weekday) have no fixed length, and
    Prometheus counts in whole milliseconds. "D" is 24 hours, as pandas resamples a UTC/naive index.
    """
    try:
        offset = pd.tseries.frequencies.to_offset(period)
    except ValueError as error:
        raise ValueError(f"period {period!r} is not a pandas frequency: {error}") from None
    if isinstance(offset, pd.offsets.Day):
        nanos = offset.n * 86_400 * 10**9
    elif isinstance(offset, pd.offsets.Tick):
        nanos = offset.nanos
    else:
        raise ValueError(f"period {period!r} has no exact Prometheus duration (a calendar period, "
                         "not a fixed length); use a fixed one such as '7D', '1h', '1min'")
    if nanos <= 0 or nanos % 10**6:
        raise ValueError(f"period {period!r} is not a positive whole number of milliseconds")
    return nanos // 10**6


def duration(ms: int) -> str:
    """Milliseconds as a Prometheus duration: 604800000 -> "7d", 1814399999 -> "20d23h59m59s999ms"."""
    if ms <= 0 or ms != int(ms):
        raise ValueError(f"a Prometheus duration needs a positive whole number of milliseconds, got {ms}")
    parts = []
    for unit, size in UNITS_MS:
        count, ms = divmod(int(ms), size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def number(x: float) -> str:
    """``x`` as PromQL and promtool read it, short when that is exact ("2", "0.7"), never rounded."""
    short = f"{float(x):g}"
    return short if float(short) == float(x) else repr(float(x))


def camel_case(name: str) -> str:
    """``early_delinquency_auc_low`` -> ``EarlyDelinquencyAucLow`` (Prometheus alert names are CamelCase)."""
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^A-Za-z0-9]+", name) if word)


def range_vector(expr: str, window: str) -> str:
    """``expr`` over ``window``: a plain range for a selector, a subquery for any other expression."""
    return f"{expr}[{window}]" if SELECTOR.match(expr) else f"({expr})[{window}:]"


# ---- an AlarmRule as a Prometheus alerting rule ----------------------------------------------------------------


def period_value(rule: AlarmRule, expr: str) -> str:
    """PromQL for the rule's statistic over the period that ends at the evaluation instant, as pandas cuts it.

    Prometheus 2 ranges include both ends; pandas periods include their start and exclude their end. So the
    range is one millisecond short of the period and looks back from one millisecond before the end:
    ``[a - period, a)`` exactly, the period ``AlarmRule.datapoints`` puts a sample in.
    """
    window = f"{range_vector(expr, duration(period_ms(rule.period) - 1))} offset 1ms"
    if rule.statistic.startswith("p"):
        return f"quantile_over_time({int(rule.statistic[1:]) / 100:g}, {window})"
    return f"{RANGE_FUNCTIONS[rule.statistic]}({window})"


def alerting_rule(rule: AlarmRule, expr: str, *, labels=None, annotations=None,
                  no_data_alert: bool = False) -> dict | list[dict]:
    """The Prometheus alerting rule that is firing exactly when ``rule`` (M of N periods breach) is in ALARM.

    ``expr`` is an instant vector, e.g. ``model_auc{model="credit"}``. Each period is reduced with the rule's
    statistic (mean -> ``avg_over_time``, p90 -> ``quantile_over_time(0.9, ...)``), and a subquery with the
    period as its step counts the breaching periods among the last N:
    ``count_over_time((avg_over_time(m[...]) < 0.7)[...:7d]) >= 2``. The subquery's range is one
    millisecond short of N periods, because a range of exactly N periods holds N + 1 steps when the
    evaluation falls on a step. The same form serves M == N: ``for: 14d`` on the plain comparison is not
    equivalent, it wants the comparison true at every evaluation of a window that slides, not in N whole
    periods, and one evaluation that does not breach starts it over.

    Period boundaries: subquery steps are multiples of the period since the Unix epoch (1970-01-01 00:00 UTC,
    a Thursday), while pandas starts the periods at midnight of the series' first day. Periods that divide a
    day ("1s", "1min", "1h", "1D") fall on the same instants either way; a "7D" period runs Thursday to
    Thursday (UTC) in Prometheus, and in AlarmRule from the weekday of the first sample.

    Missing data: a period without samples has no value in the subquery, so it neither breaches nor counts;
    with no samples at all the expression is empty and the alert resolves. Prometheus has no
    INSUFFICIENT_DATA and does not keep a state through missing periods. So ``"notBreaching"`` is rendered
    exactly; ``"missing"`` is rendered the same way, and where CloudWatch would stay in ALARM through missing
    periods that could still tip it, this alert resolves. ``"breaching"`` and ``"ignore"`` are refused:
    Prometheus cannot tell "no samples yet" from "samples missing", nor skip a period. ``no_data_alert=True``
    adds a companion ``...NoData`` alert (``absent_over_time`` over the N periods) and returns both rules.
    """
    if rule.treat_missing_data not in ("missing", "notBreaching"):
        raise ValueError(f"treat_missing_data={rule.treat_missing_data!r} has no Prometheus equivalent: a period "
                         "without samples has no value, so it cannot count as breaching nor be skipped; use "
                         "'notBreaching' (or 'missing') and no_data_alert=True to alert on silence")
    step = period_ms(rule.period)
    breach = f"{period_value(rule, expr)} {OPERATORS[rule.comparison]} {number(rule.threshold)}"
    last_n = duration(rule.evaluation_periods * step - 1)
    alert = {
        "alert": camel_case(rule.name),
        "expr": f"count_over_time(({breach})[{last_n}:{duration(step)}]) >= {rule.datapoints_to_alarm}",
        "labels": dict(labels or {}),
        "annotations": {"summary": rule.describe(), **(annotations or {})},
    }
    if not no_data_alert:
        return alert
    silent = {
        "alert": camel_case(rule.name) + "NoData",
        "expr": f"absent_over_time({range_vector(expr, duration(rule.evaluation_periods * step))})",
        "labels": dict(labels or {}),
        "annotations": {"summary": f"{rule.name}: no data in the last {rule.evaluation_periods} periods"},
    }
    return [alert, silent]


def batch_alerting_rule(rule: AlarmRule, metric: str, *, check_label: str = "check", labels=None,
                        annotations=None) -> dict:
    """The alerting rule for a batch job that pushes one series per check to a Pushgateway.

    Each check pushes ``metric{check="2024-03-04"}`` (its value is the check's statistic) and the job deletes
    all but the last N checks, so "M of the last N checks breach" is a count over the series, whatever the
    wall-clock spacing of the checks: ``count(metric < 0.7) >= 2``. A check that pushed nothing is missing:
    it neither breaches nor counts ("notBreaching"). The rule's period and statistic are the job's business.
    """
    breach = f"{metric} {OPERATORS[rule.comparison]} {number(rule.threshold)}"
    return {
        "alert": camel_case(rule.name),
        "expr": f"count({breach}) >= {rule.datapoints_to_alarm}",
        "labels": dict(labels or {}),
        "annotations": {"summary": f"{{{{ $value }}}} of the last {rule.evaluation_periods} checks "
                                   f"(label {check_label}) breach: {rule.describe()}", **(annotations or {})},
    }


# ---- SLO burn-rate alerts ---------------------------------------------------------------------------------------

# The Site Reliability Workbook, chapter 5 "Alerting on SLOs", table 5-8 (recommended parameters for a 99.9 %
# SLO): severity, long window, short window, burn rate (budget spent when it fires: 2 %, 5 %, 10 %).
SRE_WINDOWS = (("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0), ("ticket", "3d", "6h", 1.0))


def selector(metric: str, **matchers) -> str:
    """``metric{name="value",...}``; a matcher given as ("=~", regex) matches a regex; None is left out."""
    pairs = [(k, v if isinstance(v, tuple) else ("=", v)) for k, v in matchers.items() if v is not None]
    inside = ",".join(f'{k}{op}"{value}"' for k, (op, value) in pairs)
    return f"{metric}{{{inside}}}" if inside else metric


def router_availability(variant: str | None = None) -> dict:
    """``total`` and ``bad`` for the router's availability SLO: bad = answers with a 5xx code.

    ``router_requests_total`` counts every answer ``Router.handle`` gives (a backend's own code, or 503 when
    the variant is unreachable); the router never records a status 0, and the HTTP layer's refusals of an
    empty body (400) are not counted there.
    """
    return {"total": selector("router_requests_total", variant=variant),
            "bad": selector("router_requests_total", variant=variant, code=("=~", "5.."))}


def router_latency(threshold: float, variant: str | None = None) -> dict:
    """``total`` and ``good`` for a latency SLO: good = requests answered within ``threshold`` seconds.

    The threshold must be a bucket bound of ``router_request_duration_seconds`` (a histogram only knows how
    many requests were faster than each bound); the ``le`` label is written as the client library writes it.
    """
    if threshold not in LATENCY_BUCKETS:
        raise ValueError(f"latency threshold {threshold!r} is not a bucket bound of "
                         f"router_request_duration_seconds; pick one of {list(LATENCY_BUCKETS)}")
    return {"total": selector("router_request_duration_seconds_count", variant=variant),
            "good": selector("router_request_duration_seconds_bucket", variant=variant,
                             le=floatToGoString(threshold))}


def error_ratio(total: str, window: str, bad: str | None = None, good: str | None = None) -> str:
    """The share of bad events over ``window``; no bad series at all (nothing failed yet) counts as 0."""
    rate_total = f"sum(rate({total}[{window}]))"
    if bad is not None:
        return f"(sum(rate({bad}[{window}])) or vector(0)) / {rate_total}"
    return f"({rate_total} - (sum(rate({good}[{window}])) or vector(0))) / {rate_total}"


def prometheus_ms(window: str) -> int:
    """A Prometheus duration ("1h", "30m", "1h30m") in milliseconds."""
    parts = re.findall(r"(\d+)(ms|[dhms])", window)
    if not parts or "".join(n + u for n, u in parts) != window:
        raise ValueError(f"{window!r} is not a Prometheus duration such as '5m', '1h', '3d'")
    return sum(int(n) * dict(UNITS_MS)[u] for n, u in parts)


def scaled(window: str, time_scale: float) -> str:
    """``window`` divided by ``time_scale`` ("1h" / 60 -> "1m"), refused unless it is whole milliseconds."""
    ms = prometheus_ms(window) / time_scale
    if ms != int(ms):
        raise ValueError(f"window {window!r} divided by time_scale={time_scale:g} is {ms:g} ms, "
                         "not a whole number of milliseconds")
    return duration(int(ms))


def slo_rules(name: str, *, total: str, objective: float, bad: str | None = None, good: str | None = None,
              windows="sre", time_scale: float = 1) -> list[dict]:
    """Recording rules for the error ratio over each window and the multiwindow, multi-burn-rate alerts.

    From the Site Reliability Workbook, chapter 5 "Alerting on SLOs", table 5-8: page when the error ratio
    over 1h AND over 5m exceed 14.4 times the budget (1 - ``objective``), or over 6h AND 30m exceed 6 times;
    open a ticket when over 3d AND 6h it exceeds the budget itself. The long window makes the alert
    significant (14.4x for 1h spends 2 % of a 30-day budget); the short one makes it reset minutes after
    the errors stop. ``total`` and ``bad`` (or ``good``) are counter selectors: ratio =
    sum(rate(bad[w])) / sum(rate(total[w])). ``windows`` is "sre" or rows (severity, long, short, burn rate).
    ``time_scale`` divides every window (60 turns hours into minutes), so a chapter can show the same
    alerts in seconds instead of hours.
    """
    if (bad is None) == (good is None):
        raise ValueError("give exactly one of bad= or good=")
    rows = SRE_WINDOWS if windows == "sre" else tuple(windows)
    budget = number(round(1 - objective, 12))  # 1 - 0.999 is 0.0010000000000000009 in floating point
    lengths = {w: scaled(w, time_scale) for _, long, short, _ in rows for w in (long, short)}
    recorded = {w: f"slo:{name}_errors_per_request:ratio_rate{lengths[w]}" for w in lengths}
    rules = [{"record": recorded[w], "expr": error_ratio(total, lengths[w], bad, good)} for w in lengths]
    for severity in dict.fromkeys(row[0] for row in rows):
        pairs = [f"({recorded[long]} > ({number(rate)} * {budget}) and {recorded[short]} > ({number(rate)} * {budget}))"
                 for level, long, short, rate in rows if level == severity]
        rules.append({
            "alert": f"{camel_case(name)}{severity.title()}",  # one name per severity: each can be silenced
            "expr": "\n  or\n".join(pairs),
            "labels": {"severity": severity, "slo": name},
            "annotations": {"summary": f"{name}: the error budget of a {objective:.2%} objective burns fast "
                                       f"enough for a {severity}"},
        })
    return rules


# ---- files and promtool ----------------------------------------------------------------------------------------


def rule_file(groups: dict[str, list[dict]], path, interval: str | None = None) -> Path:
    """Write a Prometheus rule file: one group per entry of ``groups`` (name -> rules)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [{"name": name, **({"interval": interval} if interval else {}), "rules": rules}
            for name, rules in groups.items()]
    path.write_text(yaml.safe_dump({"groups": body}, sort_keys=False))
    return path


def promtool_values(values) -> str:
    """A sequence of samples in promtool's series notation, ``_`` for a missing one: [1, nan, 2] -> "1 _ 2"."""
    return " ".join("_" if pd.isna(v) else number(v) for v in values)


def rule_test(rule_files, input_series: dict[str, str], alert_tests: list[dict], interval: str, path,
              evaluation_interval: str | None = None, expr_tests=()) -> Path:
    """Write promtool's unit-test file: ``input_series`` maps a series to its values, one per ``interval``
    from time 0 (the Unix epoch); rules are evaluated every ``evaluation_interval`` (default ``interval``).
    ``alert_tests`` are ``{"eval_time", "alertname", "exp_alerts"}`` dicts and ``expr_tests``
    ``{"expr", "eval_time", "exp_samples"}`` dicts, as promtool reads them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    test = {"rule_files": [str(Path(f).resolve()) for f in rule_files],
            "evaluation_interval": evaluation_interval or interval,
            "tests": [{"interval": interval,
                       "input_series": [{"series": s, "values": v} for s, v in input_series.items()],
                       "alert_rule_test": list(alert_tests),
                       **({"promql_expr_test": list(expr_tests)} if expr_tests else {})}]}
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return path


def _promtool(*args) -> str:
    result = subprocess.run([find_tool("promtool"), *args], check=False, capture_output=True, text=True, timeout=120)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise RuleError(output)
    return output


def promtool_check(path) -> str:
    """``promtool check rules PATH``: its report, or RuleError with promtool's message. Lint errors (two
    rules with one name and the same labels) fail too: promtool alone would report them and exit 0."""
    return _promtool("check", "rules", "--lint-fatal", str(path))


def promtool_test(path) -> str:
    """``promtool test rules PATH``: its report, or RuleError with promtool's message (the failed tests)."""
    return _promtool("test", "rules", str(path))


# ---- replaying history through a rule ---------------------------------------------------------------------------


def backtest(rule: AlarmRule, series: pd.Series, folder, metric: str = "backtest_value") -> pd.DataFrame:
    """Replay a batch job's history through ``rule`` rendered for Prometheus, with ``promtool test rules``.

    ``series`` holds one value per period at midnight (a weekly job's results on its run dates; NaN for a run
    without a value). promtool's clock starts at the Unix epoch, a Thursday, so the history is moved to the
    first days of 1970, weekdays kept. Prometheus' periods are multiples of the period since the epoch, so it
    knows each value at the end of its own period (for "7D": the Thursday after). The expected alerts are
    ``rule.evaluate``'s ALARM states, so the promtool test passes only if Prometheus fires exactly when the
    CloudWatch-style rule is in ALARM; it raises :class:`RuleError` with promtool's message otherwise.
    Returns one row per value: its date, the value, the rule's state, when Prometheus knows (in the series'
    own dates) and whether the alert is firing then.
    """
    period, day = period_ms(rule.period), period_ms("1D")
    index = pd.DatetimeIndex(series.index)
    steps = index[1:] - index[:-1]
    if period % day or (index != index.normalize()).any() or (steps != pd.Timedelta(milliseconds=period)).any():
        raise ValueError(f"backtest needs one value per {rule.period!r} period, at midnight, and a period of whole days")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    epoch = pd.Timestamp(0)
    shift = index[0] - (epoch + pd.Timedelta(days=(index[0].day_of_week - epoch.day_of_week) % 7))
    days = (index - shift - epoch).days
    daily = [float("nan")] * (int(days[-1]) + 1)
    for d, value in zip(days, series):
        daily[d] = value
    rendered = alerting_rule(rule, metric)
    states = rule.evaluate(pd.Series(series.to_numpy(), index=index))["state"]
    known = [(int(d) * day // period + 1) * period for d in days]
    table = pd.DataFrame({"date": index, "value": series.to_numpy(), "state": states.to_numpy(),
                          "prometheus_knows": [epoch + pd.Timedelta(milliseconds=k) + shift for k in known],
                          "firing": states.to_numpy() == "ALARM"})
    checks = [{"eval_time": duration(k), "alertname": rendered["alert"],
               "exp_alerts": [{"exp_labels": rendered["labels"], "exp_annotations": rendered["annotations"]}]
               if on else []} for k, on in zip(known, table["firing"])]
    rules = rule_file({"backtest": [rendered]}, folder / "rules.yml")
    promtool_check(rules)
    test = rule_test([rules], {metric: promtool_values(daily)}, checks, duration(day), folder / "test.yml",
                     evaluation_interval=duration(period))
    table.attrs["promtool"] = promtool_test(test)
    return table
