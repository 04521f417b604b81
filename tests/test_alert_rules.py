"""The chapters' alarms as Prometheus rules, checked and unit-tested with the real promtool.

Equivalence: a rule rendered by ``alerting_rule`` is firing at exactly the period ends where
``AlarmRule.evaluate`` says ALARM; the expected alerts are derived from AlarmRule, never written by hand.
promtool's test clock starts at the Unix epoch, so the pandas series below start there too (see the weekly
test for a series that does not).
"""
from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from conftest import skip_or_fail
from mlops_lab.alert_rules import (RuleError, alerting_rule, backtest, batch_alerting_rule, duration, period_ms,
                                   promtool_check, promtool_test, promtool_values, router_availability,
                                   router_latency, rule_file, rule_test, slo_rules)
from mlops_lab.monitoring import AlarmRule
from mlops_lab.router import LATENCY_BUCKETS

SAMPLES_PER_PERIOD = 4
# within-period offsets around the period's value (mean unchanged); the first sample sits on the boundary
SPREAD = (0.05, -0.05, 0.02, -0.02)


@pytest.fixture(autouse=True)
def promtool_installed():
    if shutil.which("promtool") is None:
        skip_or_fail("promtool (Prometheus 2.x) is not installed")


def low_auc(**changes) -> AlarmRule:
    rule = AlarmRule("auc_low", threshold=0.7, period="1min", comparison="LessThanThreshold",
                     evaluation_periods=3, datapoints_to_alarm=2, treat_missing_data="notBreaching")
    return dataclasses.replace(rule, **changes)


def samples(period_values) -> list[float]:
    """SAMPLES_PER_PERIOD samples per period, spread around its value; NaN periods have none."""
    return [v + d if not math.isnan(v) else math.nan for v in period_values for d in SPREAD]


def as_series(values, step_ms: int) -> pd.Series:
    """The samples as AlarmRule reads them: indexed by time since the epoch, missing ones left out."""
    index = pd.to_datetime(np.arange(len(values)) * step_ms, unit="ms")
    return pd.Series(values, index=index).dropna()


def alert_checks(alertname: str, firing: dict[int, bool], labels: dict, annotations: dict) -> list[dict]:
    """promtool alert tests: at each time (ms) the alert is firing (with these labels) or not."""
    return [{"eval_time": duration(t) if t else "0s", "alertname": alertname,
             "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}] if on else []}
            for t, on in firing.items()]


def run_promtool(tmp_path, rules: list[dict], series: dict[str, str], checks, interval, evaluation_interval,
                 expr_tests=()) -> str:
    files = rule_file({"under_test": rules}, tmp_path / "rules.yml")
    assert "SUCCESS" in promtool_check(files)
    test = rule_test([files], series, checks, interval, tmp_path / "test.yml",
                     evaluation_interval=evaluation_interval, expr_tests=expr_tests)
    return promtool_test(test)


# ---- equivalence with AlarmRule ------------------------------------------------------------------------------

CASES = {
    "two_of_three": [0.8, 0.6, 0.8, 0.6, 0.8, 0.8, 0.8],
    "one_of_three": [0.8, 0.6, 0.8, 0.8, 0.6, 0.8, 0.8],
    "missing_run": [0.6, 0.6, math.nan, math.nan, math.nan, 0.6, 0.8, 0.6, 0.6],
    "starts_before_n_periods": [0.6, 0.6, 0.8, 0.8, 0.8],
    "starts_late": [math.nan, math.nan, 0.6, 0.8, 0.6, 0.8],
}


@pytest.mark.parametrize("statistic", ["mean", "max", "p90"])
@pytest.mark.parametrize("case", list(CASES))
def test_stream_rule_fires_exactly_when_alarm_rule_is_in_alarm(tmp_path, case, statistic):
    rule = low_auc(statistic=statistic)
    values = samples(CASES[case])
    period = period_ms(rule.period)
    states = rule.evaluate(as_series(values, period // SAMPLES_PER_PERIOD))["state"]
    assert states.index[0] == pd.Timestamp(0) or case == "starts_late"  # pandas periods start at the epoch too
    # a period's state is known at its end; mid-period evaluations must keep it (the subquery sees N steps)
    firing = {}
    for start, state in states.items():
        end = (start - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1) + period
        firing[end] = firing[end + period // 2] = state == "ALARM"
    if case in ("two_of_three", "missing_run", "starts_before_n_periods"):
        assert any(firing.values()), "the case should exercise an ALARM"
    rendered = alerting_rule(rule, 'model_auc{model="credit"}')
    run_promtool(tmp_path, [rendered], {'model_auc{model="credit"}': promtool_values(values)},
                 alert_checks("AucLow", firing, {"model": "credit"}, rendered["annotations"]),
                 interval=duration(period // SAMPLES_PER_PERIOD), evaluation_interval=duration(period // 2))


def test_period_boundary_sample_belongs_to_the_later_period_as_in_pandas(tmp_path):
    """max over a period: a spike exactly on the boundary breaches the period it starts, not the one before."""
    rule = low_auc(comparison="GreaterThanThreshold", threshold=0.5, statistic="max", datapoints_to_alarm=1,
                   evaluation_periods=1)
    values = [0.1] * 4 + [0.9] + [0.1] * 3 + [0.1] * 4  # the spike is period 1's first sample
    period = period_ms(rule.period)
    states = rule.evaluate(as_series(values, period // 4))["state"]
    assert list(states) == ["OK", "ALARM", "OK"]
    firing = {period * (k + 1): state == "ALARM" for k, state in enumerate(states)}
    rendered = alerting_rule(rule, "error_share")
    run_promtool(tmp_path, [rendered], {"error_share": promtool_values(values)},
                 alert_checks("AucLow", firing, {}, rendered["annotations"]),
                 interval=duration(period // 4), evaluation_interval=duration(period))


def test_weekly_auc_like_chapter_11_fires_at_the_thursday_after_alarm(tmp_path):
    """Chapter 11's job: one AUC a week, on Mondays. AlarmRule's 7D periods start on the first Monday;
    Prometheus's start on Thursdays (multiples of 7 days since the epoch, a Thursday). With one sample per
    week both see the same sequence of weekly values, so the states are the same; Prometheus knows each
    one at the Thursday 00:00 UTC that ends the Prometheus week holding that Monday's sample."""
    rule = AlarmRule("early_delinquency_auc_low", threshold=0.7, period="7D", comparison="LessThanThreshold",
                     evaluation_periods=3, datapoints_to_alarm=2)
    weekly = [0.78, 0.74, 0.69, 0.72, 0.66, 0.75, 0.77, 0.68, 0.65, 0.73]
    mondays = pd.date_range("1970-01-05", periods=len(weekly), freq="7D")
    assert pd.Timestamp(0).day_name() == "Thursday" and mondays[0].day_name() == "Monday"
    states = rule.evaluate(pd.Series(weekly, index=mondays))["state"]
    assert (states.index == mondays).all()  # AlarmRule's weeks run Monday to Monday
    week, day = period_ms("7D"), period_ms("1D")
    firing = {}
    for monday, state in states.items():
        at = (monday - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)
        firing[(at // week + 1) * week] = state == "ALARM"
    assert sum(firing.values()) >= 2
    daily = [math.nan] * ((mondays[-1] - pd.Timestamp(0)).days + 1)
    for monday, value in zip(mondays, weekly):
        daily[(monday - pd.Timestamp(0)).days] = value
    rendered = alerting_rule(rule, "early_delinquency_auc")
    run_promtool(tmp_path, [rendered], {"early_delinquency_auc": promtool_values(daily)},
                 alert_checks("EarlyDelinquencyAucLow", firing, {}, rendered["annotations"]),
                 interval=duration(day), evaluation_interval=duration(week))


def test_missing_is_rendered_as_not_breaching_and_resolves_where_cloudwatch_holds_alarm():
    values = samples(CASES["missing_run"])
    series = as_series(values, period_ms("1min") // SAMPLES_PER_PERIOD)
    held = low_auc(treat_missing_data="missing").evaluate(series)["state"]
    resolved = low_auc().evaluate(series)["state"]
    assert alerting_rule(low_auc(treat_missing_data="missing"), "m") == alerting_rule(low_auc(), "m")
    differ = held != resolved  # CloudWatch keeps ALARM (or has no data) where the alert has resolved
    assert (held[differ] == "ALARM").any() and held[differ].isin(["ALARM", "INSUFFICIENT_DATA"]).all()
    assert (resolved[differ] == "OK").all()


def test_no_data_companion_fires_when_the_metric_is_silent(tmp_path):
    rule = low_auc()
    period = period_ms(rule.period)
    values = samples([0.8, 0.8]) + [math.nan] * SAMPLES_PER_PERIOD * 4
    stream, silent = alerting_rule(rule, 'model_auc{model="credit"}', no_data_alert=True)
    assert silent["alert"] == "AucLowNoData"
    # absent_over_time looks back N periods, both ends included: it fires at the first evaluation after
    # last sample + N periods, not at the last one before
    last_sample = (2 * SAMPLES_PER_PERIOD - 1) * period // SAMPLES_PER_PERIOD
    window, every = rule.evaluation_periods * period, period // 2
    firing = {(last_sample + window) // every * every: False,
              math.ceil((last_sample + window + 1) / every) * every: True}
    run_promtool(tmp_path, [stream, silent], {'model_auc{model="credit"}': promtool_values(values)},
                 alert_checks("AucLowNoData", firing, {"model": "credit"}, silent["annotations"]),
                 interval=duration(period // SAMPLES_PER_PERIOD), evaluation_interval=duration(period // 2))


# ---- batch checks through a Pushgateway ----------------------------------------------------------------------

@pytest.mark.parametrize("checks", [[0.65, 0.72, 0.66], [0.65, 0.72, 0.75]])
def test_batch_rule_counts_breaching_checks_among_the_pushed_ones(tmp_path, checks):
    rule = AlarmRule("inputs_drifted_auc", threshold=0.7, period="7D", comparison="LessThanThreshold",
                     evaluation_periods=3, datapoints_to_alarm=2)
    dates = ["2024-03-04", "2024-03-13", "2024-03-18"]  # irregular spacing: the rule counts checks, not weeks
    expected = rule.evaluate(pd.Series(checks, index=pd.date_range("2024-03-04", periods=3, freq="7D")))
    rendered = batch_alerting_rule(rule, 'model_auc{job="weekly_monitor"}')
    series = {f'model_auc{{job="weekly_monitor",check="{d}"}}': f"{v:g}x10" for d, v in zip(dates, checks)}
    breaches = sum(v < rule.threshold for v in checks)
    annotations = {"summary": rendered["annotations"]["summary"].replace("{{ $value }}", str(breaches))}
    firing = {period_ms("5min"): expected["state"].iloc[-1] == "ALARM"}
    run_promtool(tmp_path, [rendered], series, alert_checks("InputsDriftedAuc", firing, {}, annotations),
                 interval="1m", evaluation_interval="1m")


# ---- SLO burn-rate alerts ------------------------------------------------------------------------------------

MINUTE = period_ms("1min")
REQUESTS_PER_MINUTE = 1000


def counters(error_ratio: float, errors_from: int, errors_until: int, minutes: int):
    """Cumulative request and error counts, one sample a minute; errors only in [errors_from, errors_until)."""
    total = [REQUESTS_PER_MINUTE * i for i in range(minutes + 1)]
    bad = np.cumsum([0] + [REQUESTS_PER_MINUTE * error_ratio * (errors_from <= i < errors_until)
                           for i in range(minutes)])
    return total, list(bad)


def slo_series(total, bad) -> dict[str, str]:
    return {'router_requests_total{variant="blue",code="200"}': promtool_values(np.subtract(total, bad)),
            'router_requests_total{variant="blue",code="503"}': promtool_values(bad)}


def test_budget_rate_errors_do_not_page(tmp_path):
    total, bad = counters(0.001, 0, 8 * 60, 8 * 60)
    rules = slo_rules("router_availability", **router_availability(), objective=0.999)
    firing = {m * MINUTE: False for m in (60, 6 * 60, 8 * 60)}
    run_promtool(tmp_path, rules, slo_series(total, bad), alert_checks("RouterAvailabilityPage", firing, {}, {}),
                 interval="1m", evaluation_interval="1m")


def test_fast_burn_pages_within_the_detection_time_and_resets_with_the_short_window(tmp_path):
    """2 % errors against a 99.9 % objective: the 1h window passes 14.4 x 0.1 % after
    (1 - SLO) / error ratio x 1h x 14.4 = 43.2 minutes (the workbook's detection time), i.e. at the
    first one-minute sample after it; when the errors stop, the 5m window drops below the threshold within
    5 minutes, while the 1h window alone would still page."""
    objective, ratio, start, stop = 0.999, 0.02, 6 * 60, 7 * 60  # six clean hours first: the 6h window stays calm
    total, bad = counters(ratio, start, stop, 8 * 60)
    rules = slo_rules("router_availability", **router_availability(), objective=objective)
    detection = math.ceil((1 - objective) / ratio * 60 * 14.4)  # minutes, rounded up to a sample
    page = rules[-2]
    assert page["alert"] == "RouterAvailabilityPage" and page["labels"]["severity"] == "page"
    firing = {(start + detection - 1) * MINUTE: False, (start + detection) * MINUTE: True,
              (stop + 5) * MINUTE: False}
    after, hour = stop + 5, 60
    ratio_1h = float((bad[after] - bad[after - hour]) / (total[after] - total[after - hour]))
    long_window = {"expr": "slo:router_availability_errors_per_request:ratio_rate1h > (14.4 * 0.001)",
                   "eval_time": duration(after * MINUTE),
                   "exp_samples": [{"labels": "slo:router_availability_errors_per_request:ratio_rate1h",
                                    "value": ratio_1h}]}
    labels = dict(page["labels"])
    run_promtool(tmp_path, rules, slo_series(total, bad),
                 alert_checks("RouterAvailabilityPage", firing, labels, page["annotations"]),
                 interval="1m", evaluation_interval="1m", expr_tests=[long_window])


def test_latency_slo_counts_requests_slower_than_a_bucket_bound(tmp_path):
    minutes, slow_from = 8 * 60, 7 * 60
    total = [REQUESTS_PER_MINUTE * i for i in range(minutes + 1)]
    slow = [REQUESTS_PER_MINUTE * 0.05 * max(i - slow_from, 0) for i in range(minutes + 1)]  # 5 % over 0.1 s
    fast = np.subtract(total, slow)
    rules = slo_rules("router_latency", **router_latency(0.1), objective=0.999)
    series = {"router_request_duration_seconds_count": promtool_values(total),
              'router_request_duration_seconds_bucket{le="0.1"}': promtool_values(fast),
              'router_request_duration_seconds_bucket{le="+Inf"}': promtool_values(total)}
    page = rules[-2]
    firing = {slow_from * MINUTE: False, minutes * MINUTE: True}
    run_promtool(tmp_path, rules, series, alert_checks("RouterLatencyPage", firing, page["labels"],
                                                       page["annotations"]),
                 interval="1m", evaluation_interval="1m")


def test_latency_bucket_labels_match_the_client_library():
    registry = CollectorRegistry()
    Histogram("router_request_duration_seconds", "latency", buckets=LATENCY_BUCKETS, registry=registry)
    exposition = generate_latest(registry).decode()
    for bound in LATENCY_BUCKETS:
        good = router_latency(bound)["good"]
        assert good.split("{")[1].rstrip("}") in exposition


def test_time_scale_divides_every_window():
    rules = slo_rules("router_availability", **router_availability(), objective=0.999, time_scale=60)
    records = [r["record"] for r in rules if "record" in r]
    assert [r.rsplit("rate", 1)[1] for r in records] == ["1m", "5s", "6m", "30s", "1h12m"]
    assert all(f"[{r.rsplit('rate', 1)[1]}]" in rule["expr"] for r, rule in zip(records, rules))


# ---- promtool check and refusals ------------------------------------------------------------------------------

def test_promtool_accepts_every_rendered_rule_and_refuses_a_broken_one(tmp_path):
    auc = AlarmRule("early_delinquency_auc_low", threshold=0.7, period="7D", comparison="LessThanThreshold",
                    evaluation_periods=3, datapoints_to_alarm=2)
    groups = {
        "stream": [*alerting_rule(auc, 'model_auc{model="credit"}', no_data_alert=True),
                   alerting_rule(low_auc(statistic="p99"), "rate(errors_total[1m])")],
        "batch": [batch_alerting_rule(dataclasses.replace(auc, name="weekly_check_auc_low"), "weekly_auc")],
        "availability": slo_rules("router_availability", **router_availability("green"), objective=0.999),
        "latency": slo_rules("router_latency", **router_latency(0.5), objective=0.99, time_scale=60),
    }
    count = sum(len(rules) for rules in groups.values())
    assert f"SUCCESS: {count} rules found" in promtool_check(rule_file(groups, tmp_path / "all.yml", interval="30s"))
    broken = {"broken": [{"alert": "Broken", "expr": "count_over_time(("}]}
    with pytest.raises(RuleError, match="unclosed left parenthesis"):
        promtool_check(rule_file(broken, tmp_path / "broken.yml"))
    twice = {"a": [alerting_rule(auc, "m")], "b": [alerting_rule(auc, "m")]}
    with pytest.raises(RuleError, match="duplicate rule"):
        promtool_check(rule_file(twice, tmp_path / "twice.yml"))


def test_promtool_test_failure_carries_promtools_message(tmp_path):
    rendered = alerting_rule(low_auc(), "m")
    checks = alert_checks("AucLow", {0: True}, {}, {})
    files = rule_file({"g": [rendered]}, tmp_path / "rules.yml")
    with pytest.raises(RuleError, match="AucLow"):
        promtool_test(rule_test([files], {"m": "1x5"}, checks, "1m", tmp_path / "test.yml"))


def test_refuses_a_latency_threshold_that_is_not_a_bucket_bound():
    with pytest.raises(ValueError, match=r"0\.15.*\[0\.001, 0\.002"):
        router_latency(0.15)


@pytest.mark.parametrize("period", ["1M", "1ME", "1W", "10us"])
def test_refuses_a_period_without_an_exact_prometheus_duration(period):
    with pytest.raises(ValueError, match=period):
        alerting_rule(low_auc(period=period), "m")


@pytest.mark.parametrize("treatment", ["breaching", "ignore"])
def test_refuses_missing_data_treatments_prometheus_cannot_render(treatment):
    with pytest.raises(ValueError, match=f"treat_missing_data='{treatment}'"):
        alerting_rule(low_auc(treat_missing_data=treatment), "m")


def test_refuses_an_inexact_time_scale():
    with pytest.raises(ValueError, match="'5m' divided by time_scale=3600"):
        slo_rules("router_availability", **router_availability(), objective=0.999, time_scale=3600)


def test_period_conversion_is_exact():
    assert [duration(period_ms(p)) for p in ("7D", "1s", "1min", "500ms", "90s")] == \
        ["7d", "1s", "1m", "500ms", "1m30s"]


def test_numbers_are_written_without_rounding():
    """A threshold or sample printed with six significant digits would move the breach boundary."""
    assert "< 0.71234567)" in alerting_rule(low_auc(threshold=0.71234567), "m")["expr"]
    assert "count(m < 0.71234567) >= 2" in batch_alerting_rule(low_auc(threshold=0.71234567), "m")["expr"]
    assert promtool_values([1234567.5, math.nan, 2.0]) == "1234567.5 _ 2"
    page = slo_rules("x", total="t", bad="b", objective=0.999)[-2]["expr"]
    assert "> (14.4 * 0.001)" in page  # the budget 1 - 0.999, not 0.0010000000000000009


def test_backtest_replays_a_weekly_history_and_agrees_with_alarm_rule(tmp_path):
    rule = AlarmRule("early_delinquency_auc_low", threshold=0.7, period="7D", comparison="LessThanThreshold",
                     evaluation_periods=3, datapoints_to_alarm=2)
    weekly = pd.Series([math.nan, math.nan, 0.78, 0.69, 0.72, 0.66, 0.75, 0.68, 0.65],
                       index=pd.date_range("2024-01-01", periods=9, freq="7D"))   # Mondays, as chapter 11's job
    table = backtest(rule, weekly, tmp_path)
    assert "SUCCESS" in table.attrs["promtool"]
    assert list(table["state"]) == list(rule.evaluate(weekly)["state"])
    assert table["firing"].sum() >= 2 and (table["prometheus_knows"].dt.day_name() == "Thursday").all()
    assert ((table["prometheus_knows"] - table["date"]).dt.days == 3).all(), "the Thursday after each Monday"


def test_backtest_fails_when_prometheus_would_disagree(tmp_path, monkeypatch):
    import mlops_lab.alert_rules as alert_rules

    rule = AlarmRule("auc_low", threshold=0.7, period="7D", comparison="LessThanThreshold",
                     evaluation_periods=3, datapoints_to_alarm=2)
    weekly = pd.Series([0.6, 0.6, 0.8, 0.8], index=pd.date_range("2024-01-01", periods=4, freq="7D"))
    real = alert_rules.alerting_rule
    monkeypatch.setattr(alert_rules, "alerting_rule",   # a rule one breach short: Prometheus fires later
                        lambda r, m: real(dataclasses.replace(r, datapoints_to_alarm=3, evaluation_periods=3), m)
                        | {"annotations": real(r, m)["annotations"]})
    with pytest.raises(RuleError, match="FAILED"):
        backtest(rule, weekly, tmp_path)


def test_backtest_needs_one_value_per_period_at_midnight(tmp_path):
    rule = AlarmRule("auc_low", threshold=0.7, period="7D", evaluation_periods=3, datapoints_to_alarm=2)
    with pytest.raises(ValueError, match="one value per"):
        backtest(rule, pd.Series([0.7, 0.7], index=pd.to_datetime(["2024-01-01", "2024-01-09"])), tmp_path)
