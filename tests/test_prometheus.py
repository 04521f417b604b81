"""The real Prometheus, Alertmanager and Pushgateway, driven through mlops_lab.prometheus.

These tests start the real binaries (Debian: prometheus, prometheus-alertmanager, prometheus-pushgateway).
Without them they skip with the install message on a laptop and fail under CI=true.
"""
from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.request

import pandas as pd
import psutil
import pytest
import yaml
from conftest import skip_or_fail
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from mlops_lab import monitoring
from mlops_lab.prometheus import (
    INSTALL_HELP,
    TOOL_NAMES,
    Alertmanager,
    ConfigError,
    MissingTool,
    Prometheus,
    PrometheusError,
    Pushgateway,
    WebhookReceiver,
    find_tool,
    require_tools,
)
from mlops_lab.servers import free_port

TOOL_PROCESS_NAMES = {name for names in TOOL_NAMES.values() for name in names}


def tool_children() -> list[psutil.Process]:
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() in TOOL_PROCESS_NAMES and child.status() != psutil.STATUS_ZOMBIE:
                children.append(child)
        except psutil.NoSuchProcess:
            pass
    return children


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After every test, no prometheus/alertmanager/pushgateway child of this process remains."""
    yield
    assert tool_children() == [], "a monitoring process outlived the test that started it"


@pytest.fixture(scope="module")
def tools():
    try:
        return {name: find_tool(name) for name in TOOL_NAMES}
    except MissingTool as error:
        skip_or_fail(str(error))


@pytest.fixture
def serve():
    """Serve a prometheus_client registry on a free 127.0.0.1 port; returns its URL."""
    servers = []

    def start(registry) -> str:
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


class LinearCounter:
    """A counter that grows by exactly ``per_second`` each second, whenever it is read."""

    def __init__(self, per_second: float):
        self.per_second, self.started = per_second, time.time()

    def collect(self):
        yield CounterMetricFamily("work_done", "work done", value=self.per_second * (time.time() - self.started))


def write_rules(path, *rules: dict):
    path.write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": list(rules)}]}))
    return path


# --- without the binaries ---------------------------------------------------------------------------------

def test_missing_tool_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in TOOL_NAMES:
        with pytest.raises(MissingTool) as error:
            find_tool(name)
        message = str(error.value)
        assert INSTALL_HELP in message
        assert "sudo apt-get install prometheus prometheus-alertmanager prometheus-pushgateway" in message
        assert "brew install prometheus alertmanager pushgateway" in message
        assert "prometheus.io/download" in message
    with pytest.raises(MissingTool):
        Prometheus(tmp_path / "prom")


def test_require_tools_names_every_missing_tool_at_once(monkeypatch, tmp_path):
    fake = tmp_path / "promtool"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool) as error:
        require_tools()
    message = str(error.value)
    assert "prometheus, alertmanager or prometheus-alertmanager, amtool, pushgateway or prometheus-pushgateway" \
        in message and "promtool" not in message.split(".")[0] and INSTALL_HELP in message


def test_find_tool_accepts_debian_names(monkeypatch, tmp_path):
    for debian_name in ("prometheus-alertmanager", "prometheus-pushgateway"):
        fake = tmp_path / debian_name
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_tool("alertmanager") == str(tmp_path / "prometheus-alertmanager")
    assert find_tool("pushgateway") == str(tmp_path / "prometheus-pushgateway")


# --- Prometheus ---------------------------------------------------------------------------------------------

def test_half_second_intervals_are_a_valid_config(tools, tmp_path):
    prometheus = Prometheus(tmp_path, scrape_interval="500ms", evaluation_interval="500ms")
    prometheus.add_target("app", "http://127.0.0.1:9")
    check = subprocess.run([tools["promtool"], "check", "config", str(prometheus.config_path)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_scrape_rate_and_histogram_quantile(tools, tmp_path, serve):
    registry = CollectorRegistry()
    registry.register(LinearCounter(per_second=10))
    latency = Histogram("latency_seconds", "latency", buckets=(0.1, 0.2, 0.5, 1.0), registry=registry)
    for value, times in ((0.05, 50), (0.15, 30), (0.3, 20)):
        for _ in range(times):
            latency.observe(value)
    url = serve(registry)
    with Prometheus(tmp_path) as prometheus:
        prometheus.add_target("app", url, variant="blue")
        assert prometheus.running and prometheus.url.startswith("http://127.0.0.1:")
        prometheus.wait_for_scrape("app")
        # rate() over 3 s needs samples across it: 3 s of 500 ms scrapes after the first.
        prometheus.wait_until("count_over_time(work_done_total[3s])", lambda frame: len(frame) and
                              frame["value"].iloc[0] >= 6, timeout=15)
        rate = prometheus.query('rate(work_done_total{job="app"}[3s])')
        # Each sample's timestamp is the scrape's start, its value is read a few ms later: allowing 50 ms
        # of such skew at each end of the ~2.5 s between first and last sample bounds the error by 4%.
        assert list(rate["variant"]) == ["blue"]
        assert rate["value"].iloc[0] == pytest.approx(10, rel=0.04)
        p90 = prometheus.value('histogram_quantile(0.9, latency_seconds_bucket{job="app"})')
        buckets = pd.Series([50, 80, 100, 100, 100], index=[0.1, 0.2, 0.5, 1.0, math.inf])
        assert p90 == pytest.approx(monitoring.histogram_quantile(0.9, buckets)) == pytest.approx(0.35)
        end = pd.Timestamp.now(tz="UTC")
        history = prometheus.query_range('latency_seconds_count{job="app"}', end - pd.Timedelta("2s"), end, 0.5)
        assert set(history.columns) >= {"time", "value", "job", "instance"}
        assert (history["value"] == 100).all() and len(history) >= 4
        assert str(history["time"].dt.tz) == "UTC"


def test_add_and_remove_target_take_effect_while_running(tools, tmp_path, serve):
    blue, green = CollectorRegistry(), CollectorRegistry()
    Gauge("model_version", "v", registry=blue).set(3)
    Gauge("model_version", "v", registry=green).set(4)
    blue_url, green_url = serve(blue), serve(green)
    with Prometheus(tmp_path) as prometheus:
        prometheus.add_target("model", blue_url, variant="blue")
        prometheus.add_target("model", green_url, variant="green")
        assert set(prometheus.targets()["instance"]) == {blue_url[7:], green_url[7:]}
        prometheus.wait_for_scrape("model")
        versions = prometheus.query("model_version").set_index("variant")["value"]
        assert versions.to_dict() == {"blue": 3.0, "green": 4.0}
        prometheus.remove_target("model", blue_url)
        assert list(prometheus.targets()["instance"]) == [green_url[7:]]


def test_wait_for_scrape_sees_a_change_made_before_the_call(tools, tmp_path, serve):
    registry = CollectorRegistry()
    gauge = Gauge("queue_depth", "q", registry=registry)
    url = serve(registry)
    with Prometheus(tmp_path) as prometheus:
        prometheus.add_target("app", url)
        prometheus.wait_for_scrape()
        for depth in (1, 2, 3):
            gauge.set(depth)
            prometheus.wait_for_scrape("app")
            assert prometheus.value("queue_depth") == depth


def test_wait_for_rules_returns_after_the_rules_saw_a_scraped_change(tools, tmp_path, serve):
    registry = CollectorRegistry()
    gauge = Gauge("queue_depth", "q", registry=registry)
    rules = write_rules(tmp_path / "rules.yml", {"alert": "QueueDeep", "expr": "queue_depth > 5"})
    with Prometheus(tmp_path / "prom", rule_files=[rules]) as prometheus:
        prometheus.add_target("app", serve(registry))
        for depth, firing in ((9, True), (1, False), (7, True)):
            gauge.set(depth)
            prometheus.wait_for_scrape("app")
            prometheus.wait_for_rules()
            assert ("QueueDeep" in set(prometheus.alerts()["alertname"])) is firing, depth


def test_wait_for_rules_refuses_when_no_rule_is_loaded(tools, tmp_path):
    with Prometheus(tmp_path / "prom") as prometheus:
        with pytest.raises(PrometheusError, match="no rule groups"):
            prometheus.wait_for_rules()


def test_bad_promql_raises_with_prometheus_message(tools, tmp_path):
    with Prometheus(tmp_path) as prometheus:
        with pytest.raises(PrometheusError, match=r"'rate\(up\[5m\]': .*parse error"):
            prometheus.query("rate(up[5m]")
        assert math.isnan(prometheus.value('up{job="none"}'))


def loaded_rules(prometheus) -> list[str]:
    with urllib.request.urlopen(prometheus.url + "/api/v1/rules", timeout=5) as response:
        groups = json.load(response)["data"]["groups"]
    return [rule["name"] for group in groups for rule in group["rules"]]


def test_rule_reload_takes_effect_and_a_bad_file_keeps_the_previous_rules(tools, tmp_path):
    good = write_rules(tmp_path / "good.yml", {"alert": "Always", "expr": "vector(1) > 0"})
    bad = write_rules(tmp_path / "bad.yml", {"alert": "Broken", "expr": "rate(up[5m]"})
    with Prometheus(tmp_path / "prom") as prometheus:
        assert loaded_rules(prometheus) == []
        prometheus.set_rule_files([good])
        assert loaded_rules(prometheus) == ["Always"]      # in effect when set_rule_files returns
        with pytest.raises(ConfigError, match="Broken.*parse error: unclosed left parenthesis"):
            prometheus.set_rule_files([good, bad])
        assert loaded_rules(prometheus) == ["Always"]
        assert prometheus.rule_files == [str(good)] and str(bad) not in prometheus.config_path.read_text()


def test_a_reload_prometheus_refuses_keeps_the_previous_configuration(tools, tmp_path):
    with Prometheus(tmp_path) as prometheus:
        prometheus.add_target("app", "http://127.0.0.1:9")
        refused = 'kept its previous configuration(.|\n)*"model-version" is not a valid label name'
        with pytest.raises(PrometheusError, match=refused):
            prometheus.add_target("app", "http://127.0.0.1:10", **{"model-version": "3"})
        assert list(prometheus.targets()["instance"]) == ["127.0.0.1:9"]
        assert "127.0.0.1:10" not in prometheus.config_path.read_text()


def test_wait_for_scrape_names_the_target_that_is_down(tools, tmp_path):
    prometheus = Prometheus(tmp_path)
    prometheus.add_target("app", f"http://127.0.0.1:{free_port()}")   # nothing listens there
    with prometheus, pytest.raises(TimeoutError, match=r"(?s)not every target of app.*down.*connection refused"):
        prometheus.wait_for_scrape("app", timeout=2)


def test_value_refuses_several_series(tools, tmp_path, serve):
    prometheus = Prometheus(tmp_path)
    for _ in range(2):
        prometheus.add_target("app", serve(CollectorRegistry()))   # before start: no reload to wait for
    with prometheus:
        prometheus.wait_for_scrape()
        with pytest.raises(PrometheusError, match="returned 2 series"):
            prometheus.value("up")


def test_second_start_in_a_used_folder(tools, tmp_path, serve):
    registry = CollectorRegistry()
    Gauge("answer", "a", registry=registry).set(42)
    url = serve(registry)
    first = Prometheus(tmp_path)
    first.add_target("app", url)
    with first:
        first.wait_for_scrape()
        with pytest.raises(ConfigError, match="another Prometheus"):
            Prometheus(tmp_path).start()
    with Prometheus(tmp_path) as again:       # the TSDB is reopened: the first run's samples are kept
        assert again.value('max_over_time(answer[5m])') == 42


# --- alerts -------------------------------------------------------------------------------------------------

@pytest.fixture
def alerting(tools, tmp_path):
    """A webhook receiver, an Alertmanager factory and a Prometheus factory, all stopped at the end."""
    started = []

    def start(server):
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


def test_alert_fires_and_reaches_the_webhook_with_its_labels(alerting, tmp_path, serve):
    registry = CollectorRegistry()
    Gauge("psi", "drift", registry=registry).set(0.4)
    rules = write_rules(tmp_path / "rules.yml", {"alert": "InputDrift", "expr": "psi > 0.2", "for": "0s",
                                                  "labels": {"severity": "warning"}})
    forwarded = []
    receiver = alerting(WebhookReceiver(tmp_path / "hook", forward=forwarded.append))
    manager = alerting(Alertmanager(tmp_path / "am", webhook_urls={"ml-team": receiver.url}))
    prometheus = Prometheus(tmp_path / "prom", alertmanager_url=manager.url)
    prometheus.add_target("monitor", serve(registry), model_version="3")
    alerting(prometheus)
    prometheus.set_rule_files([rules])          # a reload: the rule is evaluated from now on
    notification = receiver.wait_for(lambda n: n["status"] == "firing", timeout=20)
    labels = notification["alerts"][0]["labels"]
    assert labels == {"alertname": "InputDrift", "severity": "warning", "job": "monitor",
                      "instance": prometheus.targets()["instance"].iloc[0], "model_version": "3"}
    assert notification["receiver"] == "ml-team" and notification["forward_error"] is None
    assert forwarded[0]["alerts"][0]["labels"] == labels
    assert pd.Timestamp(notification["received_at"]).tzinfo is not None
    firing = prometheus.alerts()
    assert list(firing["alertname"]) == ["InputDrift"] and list(firing["state"]) == ["firing"]
    assert firing["value"].iloc[0] == pytest.approx(0.4)
    assert list(manager.alerts()["alertname"]) == ["InputDrift"]


def test_inhibit_rule_suppresses_drift_while_retraining_fires(alerting, tmp_path, serve):
    registry = CollectorRegistry()
    Gauge("psi", "drift", registry=registry).set(0.4)
    Gauge("retraining_in_progress", "1 while retraining", registry=registry).set(1)
    rules = write_rules(
        tmp_path / "rules.yml",
        {"alert": "RetrainingInProgress", "expr": "retraining_in_progress == 1", "labels": {"team": "ml"}},
        {"alert": "InputDrift", "expr": "psi > 0.2", "labels": {"team": "ml"}})
    receiver = alerting(WebhookReceiver(tmp_path / "hook"))
    # One group for the team: a notification lists the group's alerts that are not muted when it is sent.
    manager = alerting(Alertmanager(
        tmp_path / "am", webhook_urls={"ml-team": receiver.url}, route={"group_by": ["team"]},
        inhibit_rules=[{"source_matchers": ["alertname = RetrainingInProgress"],
                        "target_matchers": ["alertname = InputDrift"], "equal": ["team"]}]))
    prometheus = Prometheus(tmp_path / "prom", rule_files=[rules], alertmanager_url=manager.url)
    prometheus.add_target("monitor", serve(registry))
    alerting(prometheus)
    prometheus.wait_until("ALERTS", lambda frame: set(frame.get("alertstate", [])) == {"firing"} and
                          len(frame) == 2)
    notification = receiver.wait_for(lambda n: n["status"] == "firing", timeout=20)
    assert [alert["labels"]["alertname"] for alert in notification["alerts"]] == ["RetrainingInProgress"]
    held = manager.wait_until(lambda alerts: len(alerts) == 2).set_index("alertname")
    assert held.loc["InputDrift", "state"] == "suppressed" and held.loc["InputDrift", "inhibited_by"]
    assert held.loc["RetrainingInProgress", "state"] == "active"


def test_an_alert_posted_to_alertmanager_reaches_the_webhook(tools, tmp_path):
    with WebhookReceiver(tmp_path / "hook") as receiver, \
            Alertmanager(tmp_path / "am", webhook_urls={"team": receiver.url}) as manager:
        manager.post_alert({"alertname": "CreditModelAUCLow", "severity": "page"}, {"as_of": "2024-09-01"})
        notification = receiver.wait_for(lambda n: n["status"] == "firing")
        assert notification["commonLabels"] == {"alertname": "CreditModelAUCLow", "severity": "page"}
        assert notification["alerts"][0]["annotations"] == {"as_of": "2024-09-01"}
        with pytest.raises(PrometheusError, match="refused"):
            manager.post_alert({"": "no name"})


def test_forward_failure_is_recorded_and_answered_500(tmp_path):
    import json
    import urllib.error
    import urllib.request

    def broken(payload):
        raise RuntimeError("pipeline is down")

    with WebhookReceiver(tmp_path, forward=broken) as receiver:
        request = urllib.request.Request(receiver.url, data=json.dumps({"status": "firing"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
        assert error.value.code == 500
        recorded = receiver.notifications()
    assert recorded[0]["forward_error"] == "RuntimeError: pipeline is down"
    assert recorded[0]["status"] == "firing"
    assert (tmp_path / "notifications.jsonl").read_text().count("\n") == 1


def test_bad_alertmanager_config_raises_with_amtool_message(tools, tmp_path):
    manager = Alertmanager(tmp_path, webhook_urls={"ml-team": "http://127.0.0.1:9/"}, route={"receiver": "nobody"})
    with pytest.raises(ConfigError, match='undefined receiver "nobody"'):
        manager.start()
    assert not manager.running


# --- Pushgateway --------------------------------------------------------------------------------------------

def test_pushed_batch_result_is_queried_through_prometheus(tools, tmp_path):
    registry = CollectorRegistry()
    Gauge("weekly_psi", "PSI of the week's inputs", registry=registry).set(0.27)
    with Pushgateway(tmp_path / "push") as gateway, Prometheus(tmp_path / "prom") as prometheus:
        gateway.push("weekly_monitor", registry, week="2026-W48")
        prometheus.add_pushgateway(gateway)
        frame = prometheus.wait_until("weekly_psi")
        # honor_labels: the batch job's own job label survives (no exported_job, not job="pushgateway").
        assert frame[["job", "week", "value"]].to_dict("records") == [
            {"job": "weekly_monitor", "week": "2026-W48", "value": 0.27}]
        assert "exported_job" not in frame.columns
        gateway.delete("weekly_monitor", week="2026-W48")
        prometheus.wait_until("weekly_psi", lambda frame: len(frame) == 0)


def test_start_without_waiting_returns_before_discovery_and_the_first_query_that_needs_it_waits(tools, tmp_path):
    """Prometheus hands discovered targets on every 5 s, the first time 5 s after it starts: start(wait=False)
    returns as soon as the server is ready, and wait_for_scrape (or wait_until_configured) then waits."""
    registry = CollectorRegistry()
    Gauge("weekly_psi", "PSI of the week's inputs", registry=registry).set(0.27)
    with Pushgateway(tmp_path / "push") as gateway:
        gateway.push("weekly_monitor", registry)
        prometheus = Prometheus(tmp_path / "prom")
        prometheus.add_pushgateway(gateway)
        started = time.monotonic()
        with prometheus.start(wait=False):
            returned = time.monotonic() - started
            assert prometheus.targets().empty, "nothing discovered yet: start did not wait"
            prometheus.wait_for_scrape("pushgateway")      # waits for the discovery, then for a scrape
            assert prometheus.value("weekly_psi") == 0.27
        assert returned < 2.5 < time.monotonic() - started, (returned, time.monotonic() - started)


def test_stop_leaves_no_process(tools, tmp_path):
    servers = [Prometheus(tmp_path / "p"), Pushgateway(tmp_path / "g"),
               Alertmanager(tmp_path / "a", webhook_urls={"hook": "http://127.0.0.1:9/"})]
    pids = [server.start().server.process.pid for server in servers]
    assert len(tool_children()) == 3
    for server in servers:
        server.stop()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids)
    assert all((tmp_path / folder / f"{name}.log").exists()
               for folder, name in (("p", "prometheus"), ("g", "pushgateway"), ("a", "alertmanager")))
