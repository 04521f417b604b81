"""Monitoring: Prometheus parsing, delayed labels, metrics with uncertainty, CloudWatch-style alarms, report."""
from __future__ import annotations

import http.server
import re
import threading

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sklearn.metrics import roc_auc_score

from mlops_lab.monitoring import (AlarmRule, auc_se, auc_with_se, check_labels_known, histogram_buckets,
                                  histogram_quantile, join_labels, label_feed, markdown_report, metric_value,
                                  parse_metrics, report_html, rolling_metrics, scrape, wilson_interval)
from mlops_lab.simulator import (APPROVED, EARLY_LABEL, EARLY_MONTHS, KNOWN, REPORTING_LAG_MONTHS, TARGET,
                                 CreditStream, LabelFromTheFuture, known_as_of)


@pytest.fixture
def exposition():
    registry = CollectorRegistry()
    requests = Counter("demo_requests", "requests", ["status"], registry=registry)
    latency = Histogram("demo_latency_seconds", "latency", buckets=(0.01, 0.02, 0.05, 0.1), registry=registry)
    requests.labels("200").inc(90)
    requests.labels("500").inc(10)
    for value in [0.005] * 50 + [0.015] * 30 + [0.04] * 15 + [0.2] * 5:
        latency.observe(value)
    return generate_latest(registry).decode()


def test_parse_metrics_counters_and_histograms(exposition):
    samples = parse_metrics(exposition)
    assert metric_value(samples, "demo_requests_total") == 100
    assert metric_value(samples, "demo_requests_total", status="500") == 10
    assert metric_value(samples, "demo_requests_total", status="404") == 0
    buckets = histogram_buckets(samples, "demo_latency_seconds")
    assert buckets.tolist() == [50, 80, 95, 95, 100] and np.isinf(buckets.index[-1])
    assert metric_value(samples, "demo_latency_seconds_count") == 100


def test_histogram_quantile_interpolates_like_prometheus(exposition):
    buckets = histogram_buckets(parse_metrics(exposition), "demo_latency_seconds")
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)          # rank 50 = top of bucket 1
    assert histogram_quantile(0.65, buckets) == pytest.approx(0.015)        # half way through (0.01, 0.02]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.005)        # from 0 within the first bucket
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1)          # +Inf bucket: highest finite bound
    assert np.isnan(histogram_quantile(0.5, pd.Series([0.0, 0.0], index=[0.1, np.inf])))


def test_scrape_reads_a_real_http_endpoint(exposition):
    body = exposition.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert metric_value(samples, "demo_requests_total", status="200") == 90


def test_join_labels_as_of_keeps_unlabelled_predictions():
    predictions = pd.DataFrame({"application_id": [1, 2, 3], "score": [0.9, 0.2, 0.6],
                                "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])})
    labels = pd.DataFrame({"application_id": [1, 2, 3], "label": [1, 0, 0],
                           "label_time": pd.to_datetime(["2024-02-01", "2024-03-01", "2024-04-01"])})
    joined = join_labels(predictions, labels, as_of=pd.Timestamp("2024-03-15"))
    assert joined["label"].tolist()[:2] == [1, 0] and np.isnan(joined["label"].iloc[2])
    assert pd.isna(joined["label_time"].iloc[2])
    assert join_labels(predictions, labels, as_of="2024-04-01")["label"].notna().all()  # the day it arrives
    with pytest.raises(pd.errors.MergeError):
        join_labels(predictions, pd.concat([labels, labels]), as_of="2024-12-31")


def test_join_labels_needs_as_of_and_refuses_the_future():
    predictions = pd.DataFrame({"application_id": [1, 2], "score": [0.9, 0.2],
                                "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01"])})
    labels = pd.DataFrame({"application_id": [1, 2], "label": [1, 0],
                           "label_time": pd.to_datetime(["2024-01-20", "2024-06-01"])})
    with pytest.raises(TypeError):
        join_labels(predictions, labels)                       # as_of is required (keyword only)
    with pytest.raises(TypeError, match="as_of is required"):
        join_labels(predictions, labels, as_of=None)
    with pytest.raises(ValueError, match="made after as_of"):  # a prediction not yet made on as_of
        join_labels(predictions, labels, as_of="2024-01-15")
    with pytest.raises(ValueError, match="timestamp"):
        join_labels(predictions.drop(columns="timestamp"), labels, as_of="2024-12-31")


def test_rolling_metrics_refuses_a_label_known_after_as_of():
    predictions = pd.DataFrame({"application_id": np.arange(40), "score": np.linspace(0, 1, 40),
                                "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(40), "D")})
    labels = pd.DataFrame({"application_id": np.arange(40), "label": np.arange(40) % 2,
                           "label_time": predictions["timestamp"] + pd.Timedelta(days=30)})
    as_of = pd.Timestamp("2024-02-20")
    joined = join_labels(predictions, labels, as_of="2024-03-31")     # joined later than the as_of below
    with pytest.raises(LabelFromTheFuture, match="not known on 2024-02-20"):
        rolling_metrics(joined[joined["timestamp"] <= as_of], as_of=as_of)
    with pytest.raises(TypeError):
        rolling_metrics(joined)                                       # as_of is required
    with pytest.raises(ValueError, match="join_labels"):
        rolling_metrics(joined.drop(columns="label_time"), as_of="2024-12-31")
    honest = join_labels(predictions[predictions["timestamp"] <= as_of], labels, as_of=as_of)
    table = rolling_metrics(honest, as_of=as_of, origin=pd.Timestamp("2024-01-01"))
    assert table["n"].sum() == (labels["label_time"] <= as_of).sum() == 21   # labels of Jan 1-21 only
    check_labels_known(honest, as_of)
    # a label with no arrival date (declined, or made up) is not known on any date
    with pytest.raises(LabelFromTheFuture):
        check_labels_known(honest.assign(label=1.0), as_of)
    # a window reaching past as_of: predictions not yet made, even if every joined label is old enough
    early = join_labels(predictions, labels.assign(label_time=pd.Timestamp("2024-01-01")), as_of="2024-12-31")
    with pytest.raises(ValueError, match="made after"):
        rolling_metrics(early, as_of="2024-02-01")


def test_label_feed_follows_the_simulators_clock():
    batch = CreditStream(seed=3, rows_per_month=3000).month(2)
    feed = label_feed(batch, EARLY_LABEL)
    assert len(feed) == batch[APPROVED].sum() < len(batch)           # declined applicants get no label
    assert (feed["label_time"] == feed["application_date"] + pd.DateOffset(
        months=EARLY_MONTHS + REPORTING_LAG_MONTHS)).all()
    predictions = batch[["application_id"]].assign(timestamp=batch["application_date"], score=0.5)
    for as_of in ["2024-06-15", "2024-07-01", "2024-08-01"]:
        joined = join_labels(predictions[predictions["timestamp"] <= as_of], feed, as_of=as_of)
        known = known_as_of(batch, as_of, EARLY_LABEL)
        assert set(joined.loc[joined["label"].notna(), "application_id"]) == set(known["application_id"])
    target = label_feed(batch, TARGET)
    assert (target["label_time"] == batch.loc[batch[APPROVED], KNOWN[TARGET]].to_numpy()).all()
    with pytest.raises(ValueError, match="label must be"):
        label_feed(batch, "income")


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (float(low), float(high)) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook example
    low, high = wilson_interval(0, 20)
    assert float(low) == pytest.approx(0.0, abs=1e-12) and 0 < float(high) < 0.2


def test_auc_matches_sklearn_and_se_shrinks_with_n():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.2
    score = rng.normal(y * 1.0, 1.0)
    auc, se = auc_with_se(y, score)
    assert auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    _, se_small = auc_with_se(y[:200], score[:200])
    assert 0 < se < se_small
    # Hanley-McNeil is close to the spread of bootstrap AUCs
    boot = [roc_auc_score(y[i], score[i]) for i in (rng.integers(0, 2000, 2000) for _ in range(200))]
    assert se == pytest.approx(np.std(boot), rel=0.3)
    assert np.isnan(auc_with_se([1, 1], [0.2, 0.3])[0])
    assert auc_se(auc, int(y.sum()), int((~y).sum())) == pytest.approx(se, abs=1e-15)
    planned = auc_se(0.7, np.array([50, 200]), np.array([450, 1800]))
    assert planned[1] < planned[0] and planned[0] / planned[1] == pytest.approx(2, rel=0.05)  # 1/sqrt(n)


def test_rolling_metrics_windows_and_coverage():
    rng = np.random.default_rng(1)
    times = pd.date_range("2024-01-01", periods=1400, freq="h")
    y = (rng.random(1400) < 0.3).astype(int)
    joined = pd.DataFrame({"timestamp": times, "score": np.clip(y * 0.4 + rng.random(1400) * 0.6, 0, 1),
                           "label": np.where(np.arange(1400) < 1000, y, np.nan),
                           "label_time": np.where(np.arange(1400) < 1000, times[999], pd.NaT)})
    table = rolling_metrics(joined, as_of=times[-1], window="7D")
    assert table["predictions"].sum() == 1400
    assert table["n"].sum() == 1000
    assert table["coverage"].iloc[0] == 1.0 and table["coverage"].iloc[-1] == 0.0
    full = table[table["n"] > 0]
    assert ((full["accuracy_low"] <= full["accuracy"]) & (full["accuracy"] <= full["accuracy_high"])).all()
    assert (full["auc_low"] < full["auc"]).all()


def test_rolling_metrics_windows_start_at_origin_not_at_first_prediction():
    # the first sampled prediction is on day 2: windows still start on the period's first day
    joined = pd.DataFrame({"timestamp": pd.date_range("2024-01-03", periods=12, freq="D"),
                           "score": 0.9, "label": 1.0, "label_time": pd.Timestamp("2024-01-20")})
    as_of = "2024-01-31"
    assert rolling_metrics(joined, as_of=as_of, window="7D").index[0] == pd.Timestamp("2024-01-03")
    table = rolling_metrics(joined, as_of=as_of, window="7D", origin=pd.Timestamp("2024-01-01"))
    assert table.index.tolist() == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-08")]
    assert table["predictions"].tolist() == [5, 7]


def minute_series(values, start="2024-01-01 00:00"):
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="1min"), dtype=float)


def test_alarm_m_out_of_n():
    rule = AlarmRule("errors", threshold=5, period="1min", evaluation_periods=3, datapoints_to_alarm=2)
    table = rule.evaluate(minute_series([1, 9, 1, 1, 9, 9, 1, 1, 1]))
    # windows of 3: [1 9 1] one breach, [9 1 1] one, [1 1 9] one, [1 9 9] two: ALARM, [9 9 1] two, [9 1 1] one
    assert table["state"].tolist() == ["INSUFFICIENT_DATA", "INSUFFICIENT_DATA", "OK", "OK", "OK",
                                       "ALARM", "ALARM", "OK", "OK"]
    assert rule.transitions(minute_series([1, 9, 1, 1, 9, 9, 1, 1, 1]))["state"].tolist() == [
        "INSUFFICIENT_DATA", "OK", "ALARM", "OK"]
    one_spike = AlarmRule("errors", threshold=5, evaluation_periods=3, datapoints_to_alarm=3)
    assert "ALARM" not in one_spike.evaluate(minute_series([9, 9, 1, 9, 9, 1]))["state"].tolist()


def test_alarm_statistics_periods_and_missing_data():
    index = pd.to_datetime(["2024-01-01 00:00:10", "2024-01-01 00:00:50", "2024-01-01 00:02:30"])
    series = pd.Series([2.0, 10.0, 10.0], index=index)
    mean_rule = AlarmRule("m", threshold=5, evaluation_periods=1, datapoints_to_alarm=1)
    assert mean_rule.datapoints(series).iloc[0] == 6.0
    assert mean_rule.evaluate(series)["state"].tolist() == ["ALARM", "INSUFFICIENT_DATA", "ALARM"]
    ignore = AlarmRule("m", threshold=5, evaluation_periods=1, datapoints_to_alarm=1, treat_missing_data="ignore")
    assert ignore.evaluate(series)["state"].tolist() == ["ALARM", "ALARM", "ALARM"]
    breaching = AlarmRule("m", threshold=100, evaluation_periods=1, datapoints_to_alarm=1,
                          treat_missing_data="breaching")
    assert breaching.evaluate(series)["state"].tolist() == ["OK", "ALARM", "OK"]
    rule = AlarmRule("auc", threshold=0.75, period="1min", comparison="LessThanThreshold", evaluation_periods=3,
                     datapoints_to_alarm=2)
    # labels stop arriving: [breach, breach, -] ALARM; [breach, -, -] undecided: stays; [-, -, -] no data
    assert rule.evaluate(minute_series([0.8, 0.7, 0.7, np.nan, np.nan, np.nan]))["state"].tolist() == [
        "INSUFFICIENT_DATA", "INSUFFICIENT_DATA", "ALARM", "ALARM", "ALARM", "INSUFFICIENT_DATA"]
    assert rule.evaluate(minute_series([0.8, 0.8, 0.8, 0.7, np.nan]))["state"].tolist()[-2:] == ["OK", "OK"]
    p99 = AlarmRule("latency", threshold=0.5, statistic="p99", comparison="GreaterThanOrEqualToThreshold",
                    evaluation_periods=1, datapoints_to_alarm=1)
    assert p99.evaluate(minute_series([0.1, 0.6]))["state"].tolist() == ["OK", "ALARM"]
    low_acc = AlarmRule("accuracy", threshold=0.8, period="1D", comparison="LessThanThreshold",
                        evaluation_periods=2, datapoints_to_alarm=2)
    assert "LessThanThreshold" in low_acc.comparison and "< 0.8" in low_acc.describe()
    with pytest.raises(ValueError, match="datapoints_to_alarm"):
        AlarmRule("bad", threshold=1, evaluation_periods=2, datapoints_to_alarm=3)
    with pytest.raises(ValueError, match="comparison"):
        AlarmRule("bad", threshold=1, comparison=">")


def test_markdown_report_and_html(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "plot.png")
    plt.close(fig)
    metrics = pd.DataFrame({"accuracy": [0.91234, np.nan], "n": [1200, 0]},
                           index=pd.Index(["champion", "challenger"], name="model"))
    text = markdown_report("Model monitor", metrics, alarms={"accuracy_low": "ALARM", "latency_p99": "OK"},
                           figures={"accuracy over time": "plot.png"}, notes=["window: 7 days"])
    assert text.startswith("## Model monitor")
    assert "0.912" in text and "0.91234" not in text and "1200 " in text and "1200.000" not in text
    assert " nan " not in text and re.search(r"\| +- +\|", text)
    assert "| accuracy_low | **ALARM** |" in text and "| latency_p99 | OK |" in text
    assert "![accuracy over time](plot.png)" in text
    html = report_html(text, tmp_path)
    assert "<table>" in html and "data:image/png;base64," in html and "<strong>ALARM</strong>" in html
    with pytest.raises(FileNotFoundError):
        report_html(text, tmp_path / "elsewhere")


def test_read_capture_flattens_rows_and_rejects_a_changed_schema(tmp_path):
    import json

    from mlops_lab.monitoring import read_capture

    record = {"schema": 1, "ts": 1700000000.5, "request_id": "r1", "variant": "blue", "shadow": False,
              "status": 200, "latency_ms": 3.2, "user_id": None, "model_version": "1",
              "inputs": [{"age": 30, "purpose": "car"}, {"age": 50, "purpose": "education"}],
              "predictions": [0.1, 0.7]}
    failed = {**record, "request_id": "r2", "status": 400, "predictions": [], "inputs": [{"age": 1}]}
    both = {**record, "request_id": "r3", "predictions": [[0.8, 0.2]], "inputs": [{"age": 44}]}
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (record, failed, both)) + "\n")
    frame = read_capture(path)
    assert frame["request_id"].tolist() == ["r1", "r1", "r2", "r3"]
    assert frame["row"].tolist() == [0, 1, 0, 0]
    assert frame["score"].tolist()[:2] == [0.1, 0.7] and pd.isna(frame["score"].iloc[2])
    assert frame["score"].iloc[3] == 0.2 and frame["ts"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20.500")
    half_written = path.read_text() + json.dumps({**record, "request_id": "r4"})[:40]
    path.write_text(half_written)
    assert read_capture(path)["request_id"].tolist() == frame["request_id"].tolist(), "the partial line waits"
    del record["model_version"]
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="model_version"):
        read_capture(path)


def test_chapter_11_checks_say_right_and_wrong(monkeypatch, capsys):
    from mlops_lab.checks import WrongAnswer
    from mlops_lab.exercises import ch11

    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")
    buckets = pd.Series([40, 70, 90, 100, 100], index=[5, 10, 20, 50, float("inf")])
    ch11.check_p95(35, buckets)
    ch11.check_p95(..., buckets)
    with pytest.raises(WrongAnswer):
        ch11.check_p95(50, buckets)
    assert 1200 < ch11.labels_needed() < 1250
    ch11.check_labels_needed(ch11.labels_needed())
    with pytest.raises(WrongAnswer):
        ch11.check_labels_needed(400)
    predictions = pd.DataFrame({"application_id": [1, 2, 3, 4, 5],
                                "timestamp": pd.to_datetime(["2023-12-01", "2023-12-02", "2023-12-03",
                                                             "2023-12-04", "2024-02-01"])})
    labels = pd.DataFrame({"application_id": [1, 2, 3, 4, 5], "label": [0, 1, 0, 1, 0],
                           "label_time": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-02-01", "2024-03-01",
                                                         "2024-06-01"])})
    ch11.check_coverage(0.5, predictions, labels, pd.Timestamp("2024-01-10"))   # 2 of the 4 made by then
    with pytest.raises(WrongAnswer):
        ch11.check_coverage(0.4, predictions, labels, pd.Timestamp("2024-01-10"))  # 2 of all 5: not yet made
    with pytest.raises(WrongAnswer, match="made by as_of"):
        ch11.check_coverage(0.3, predictions, labels, pd.Timestamp("2024-01-10"))
    out = capsys.readouterr().out
    assert out.count("correct") == 3 and "not attempted" in out


LATENCY_RULE = {"alert": "RouterLatencyHigh", "for": "2m", "labels": {"severity": "page"},
                "expr": "histogram_quantile(0.99, sum by (le) (rate(router_request_duration_seconds_bucket[1m]))) > 0.25"}


@pytest.mark.parametrize("wrong, says", [
    ({"for": "0s"}, "does not fire when it should"),                   # pages on the first minute: a blip
    ({"expr": LATENCY_RULE["expr"].replace("0.25", "0.6")}, "does not fire when it should"),   # never fires
    ({"expr": LATENCY_RULE["expr"][:-8]}, "promtool refused"),          # unbalanced parentheses
    ({"for": "two minutes"}, "promtool refused"),
    ({"alert": "Latency"}, "RouterLatencyHigh"),
    ({"labels": {"severity": "ticket"}}, "severity: page"),
])
def test_chapter_11_alerting_rule_exercise_runs_promtool(monkeypatch, capsys, wrong, says):
    from conftest import skip_or_fail
    from mlops_lab.checks import WrongAnswer
    from mlops_lab.exercises import ch11
    from mlops_lab.prometheus import MissingTool, find_tool

    try:
        find_tool("promtool")
    except MissingTool as error:
        skip_or_fail(str(error))
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")
    ch11.check_latency_rule(LATENCY_RULE)
    ch11.check_latency_rule({**LATENCY_RULE, "expr": ...})
    out = capsys.readouterr().out
    assert "correct" in out and "not attempted" in out and "/tmp" not in out
    with pytest.raises(WrongAnswer, match=says) as error:
        ch11.check_latency_rule({**LATENCY_RULE, **wrong})
    assert "/tmp" not in str(error.value), "no machine path in the verdict"


@pytest.fixture(scope="module")
def default_job_data():
    stream = CreditStream(seed=5, rows_per_month=1500)
    year = stream.months(range(0, 12))
    rng = np.random.default_rng(0)
    predictions = year[["application_id"]].assign(timestamp=year["application_date"],
                                                  score=rng.random(len(year)) * 0.3 + 0.4 * (year["credit_score"] < 640))
    return predictions, label_feed(year, TARGET)


def test_chapter_11_build_exercise_catches_the_future_and_a_maturing_month(monkeypatch, capsys, default_job_data):
    from mlops_lab.checks import WrongAnswer
    from mlops_lab.exercises import ch11
    from mlops_lab.simulator import month_label, newest_complete_month

    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")
    predictions, feed = default_job_data
    assert np.isnan(ch11.default_job(predictions, feed, "2024-12-31"))          # no 2024 month is complete
    assert 0.5 < ch11.default_job(predictions, feed, "2025-02-01") < 1            # January 2024 is
    ch11.check_default_job(ch11.default_job, predictions, feed)

    def not_yet(predictions, labels, run_date):
        ...

    ch11.check_default_job(not_yet, predictions, feed)
    ch11.check_default_job(..., predictions, feed)

    def peeks(predictions, labels, run_date):       # the right month, but every label the feed will ever hold
        month = month_label(newest_complete_month(run_date) + 1)
        rows = predictions.merge(labels, on="application_id")
        rows = rows[rows["timestamp"].dt.to_period("M").astype(str) == month]
        return auc_with_se(rows["label"], rows["score"])[0] if len(rows) else float("nan")

    with pytest.raises(WrongAnswer, match="from the future"):
        ch11.check_default_job(peeks, predictions, feed)

    def maturing(predictions, labels, run_date):    # honest about dates, but a month still maturing
        return ch11._month_auc(predictions, labels, pd.Timestamp(run_date),
                               month_label(newest_complete_month(run_date) + 1))

    with pytest.raises(WrongAnswer, match="still maturing"):
        ch11.check_default_job(maturing, predictions, feed)

    def crashes(predictions, labels, run_date):     # a bug in the student's code is reported, not raised
        return predictions["label"].mean()

    with pytest.raises(WrongAnswer, match="raised KeyError"):
        ch11.check_default_job(crashes, predictions, feed)
    out = capsys.readouterr().out
    assert out.count("correct") == 1 and out.count("not attempted") == 2


# ---- counter resets (issue 12, item 11a) --------------------------------------------------------------------


def router_exposition(ok: int, errors: int, latencies: list[float]) -> str:
    """The router's counters as a process that has answered ``ok`` + ``errors`` requests since it started."""
    registry = CollectorRegistry()
    requests = Counter("router_requests", "requests", ["variant", "code"], registry=registry)
    latency = Histogram("router_request_duration_seconds", "latency", ["variant"], buckets=(0.01, 0.1),
                        registry=registry)
    requests.labels("blue", "200").inc(ok)
    if errors:
        requests.labels("blue", "400").inc(errors)
    for value in latencies:
        latency.labels("blue").observe(value)
    return generate_latest(registry).decode()


def test_counter_increase_treats_a_drop_as_a_restart_like_prometheus():
    from mlops_lab.monitoring import counter_increase

    assert counter_increase(100, 130) == 30
    assert counter_increase(100, 30) == 30           # restarted, then counted 30 from zero
    before = pd.Series([5.0, 8.0, 10.0], index=[0.1, 1.0, np.inf])
    after = pd.Series([1.0, 2.0, 2.0], index=[0.1, 1.0, np.inf])
    assert counter_increase(before, after).tolist() == [1, 2, 2]      # a histogram restarts as a whole
    assert counter_increase(before, before + 1).tolist() == [1, 1, 1]


def test_history_frame_survives_a_router_restart():
    from mlops_lab.monitoring import history_frame, router_snapshot

    scrapes = [router_exposition(90, 10, [0.005] * 100),
               router_exposition(180, 20, [0.005] * 200),     # 100 more requests in 1 s
               router_exposition(27, 3, [0.05] * 30)]         # restarted: 30 requests since
    snapshots = [router_snapshot(parse_metrics(text), t) for t, text in enumerate(scrapes)]
    frame = history_frame(snapshots)
    assert frame["rps"].tolist() == [100, 30]
    assert frame["error_rate"].tolist() == pytest.approx([0.1, 0.1])
    assert frame["p95_ms"].iloc[1] == pytest.approx(95.5)   # all 30 in (0.01, 0.1]: rank 28.5 of 30


# ---- prediction drift (issue 12, item 11b) ------------------------------------------------------------------
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))   # the router's buckets for router_prediction


def test_psi_is_zero_for_the_same_shares_and_matches_the_formula():
    from mlops_lab.monitoring import psi

    reference = pd.Series([400.0, 600.0], index=[0.5, np.inf])
    assert psi(reference, reference / 10) == pytest.approx(0.0, abs=1e-3)
    # shares 0.4/0.6 -> 0.6/0.4 (pseudo-counts negligible at these counts): 2 x 0.2 x ln(1.5)
    assert psi(reference * 100, pd.Series([60_000.0, 40_000.0], index=[0.5, np.inf])) == pytest.approx(
        0.4 * np.log(1.5), rel=1e-3)
    assert np.isfinite(psi(reference, pd.Series([0.0, 50.0], index=[0.5, np.inf])))   # an empty bucket


def test_psi_threshold_is_exceeded_at_the_stated_rate_without_drift():
    from mlops_lab.monitoring import psi, psi_threshold

    reference = pd.Series([50.0, 300, 900, 1500, 1200, 700, 300, 40, 9, 1], index=list(SCORE_BUCKETS))
    threshold = psi_threshold(reference, n=2000, false_breach_rate=0.01, draws=20_000, seed=1)
    rng = np.random.default_rng(2)   # fresh draws, not the ones the threshold came from
    shares = reference / reference.sum()
    values = psi(rng.multinomial(int(reference.sum()), shares, size=5000), rng.multinomial(2000, shares, size=5000))
    # 5,000 draws at a true rate of 1 %: the share exceeding lies within 0.4-1.6 % (about 4 standard errors)
    assert 0.004 < np.mean(values > threshold) < 0.016


def test_a_prediction_drift_alarm_fires_on_shifted_scores_and_survives_a_restart():
    from mlops_lab.monitoring import bucket_counts, prediction_psi, psi_threshold

    rng = np.random.default_rng(0)
    registry = CollectorRegistry()
    scores = Histogram("router_prediction", "scores", ["variant"], buckets=SCORE_BUCKETS, registry=registry)

    def scrape_now():
        return histogram_buckets(parse_metrics(generate_latest(registry).decode()), "router_prediction",
                                 variant="blue")

    for value in rng.beta(2, 8, 20_000):
        scores.labels("blue").observe(value)
    reference = bucket_counts(scrape_now())
    scrapes = {pd.Timestamp("2025-01-05"): scrape_now()}
    for week in range(1, 9):
        if week == 4:   # the router restarts: its histogram starts again from zero
            registry = CollectorRegistry()
            scores = Histogram("router_prediction", "scores", ["variant"], buckets=SCORE_BUCKETS, registry=registry)
        for value in rng.beta(2, 8 if week < 5 else 5, 2000):   # weeks 5-8: riskier applicants
            scores.labels("blue").observe(value)
        scrapes[pd.Timestamp("2025-01-05") + pd.Timedelta(weeks=week)] = scrape_now()
    values = prediction_psi(scrapes, reference)
    threshold = psi_threshold(reference, n=2000, false_breach_rate=0.01, draws=5000, seed=0)
    alarm = AlarmRule("prediction_drift", threshold=threshold, period="7D", evaluation_periods=3,
                      datapoints_to_alarm=2)
    states = alarm.evaluate(values)["state"]
    assert len(values) == 8 and (values >= 0).all()
    assert (values.iloc[:4] <= threshold).all(), "no breach before the shift, the restart included"
    assert states.iloc[2:4].tolist() == ["OK", "OK"] and states.iloc[-1] == "ALARM"


# ---- batch results through a real Pushgateway and Prometheus ------------------------------------------------
@pytest.fixture
def pushed(tmp_path):
    """A Pushgateway scraped by a Prometheus, both real, in tmp_path."""
    from conftest import skip_or_fail
    from mlops_lab.prometheus import MissingTool, Prometheus, Pushgateway

    try:
        gateway, prometheus = Pushgateway(tmp_path / "pgw"), Prometheus(tmp_path / "prom")
    except MissingTool as error:
        skip_or_fail(str(error))
    with gateway:
        prometheus.add_pushgateway(gateway)
        with prometheus:
            yield gateway, prometheus


def test_check_history_keeps_exactly_the_newest_checks_in_prometheus(pushed):
    from mlops_lab.monitoring import CheckHistory, batch_registry

    gateway, prometheus = pushed
    history = CheckHistory(gateway, "drift_monitor", keep=3)
    drifted = {"2025-01-13": 4, "2025-01-20": 0, "2025-01-27": 5, "2025-02-03": 6}
    for check, count in drifted.items():
        history.push(check, batch_registry({"credit_input_drifted_features": count},
                                           {"credit_input_drift_p_adjusted": pd.Series({"income": 0.5, "dti": 1e-6})}))
    prometheus.wait_for_scrape("pushgateway")
    series = prometheus.query("credit_input_drifted_features")
    assert sorted(series["check"]) == ["2025-01-20", "2025-01-27", "2025-02-03"], "the oldest check was deleted"
    assert set(series["job"]) == {"drift_monitor"}, "honor_labels keeps the pushing job's name"
    assert prometheus.value("count(credit_input_drifted_features > 0)") == 2, "2 of the last 3 checks drifted"
    per_feature = prometheus.query('credit_input_drift_p_adjusted{check="2025-02-03"}').set_index("feature")["value"]
    assert per_feature.to_dict() == {"dti": 1e-6, "income": 0.5}
    with pytest.raises(ValueError, match="pushed already"):
        history.push("2025-02-03", batch_registry({"credit_input_drifted_features": 0}))
    history.clear()
    prometheus.wait_for_scrape("pushgateway")
    assert prometheus.query("credit_input_drifted_features").empty, "a new baseline: the rule starts over"


def test_check_history_refuses_to_keep_nothing():
    from mlops_lab.monitoring import CheckHistory

    with pytest.raises(ValueError, match="keep must be at least 1"):
        CheckHistory(None, "job", keep=0)
