"""The real Prometheus, Alertmanager and Pushgateway for chapters 11-12, started and stopped from Python.

- :class:`Prometheus` scrapes static targets (the router, the model servers, a :class:`Pushgateway`),
  evaluates alerting rules and sends what fires to an :class:`Alertmanager`; :meth:`Prometheus.query` answers
  PromQL as a DataFrame.
- :class:`Alertmanager` groups, inhibits and routes alerts to webhooks; :class:`WebhookReceiver` is such a
  webhook, in this process: it records every notification (and may start a pipeline).
- :class:`Pushgateway` holds the results a batch job pushes (the weekly drift and delayed-accuracy check),
  which is the Pushgateway's documented use: the outcome of a service-level batch job.

Every process is a :class:`~mlops_lab.servers.BackgroundServer` on a free 127.0.0.1 port, with its
configuration, data and log under the folder the caller gives, and is stopped with its context manager, by
``stop()``, or when Python exits. The tools come from the system (:func:`find_tool`).

Measured on the course machine (2 cores; Debian's Prometheus 2.42, Alertmanager 0.25, Pushgateway 1.5.1);
``tests/test_prometheus.py`` asserts the behaviours, the times and sizes are from single runs:

- a 500 ms scrape and evaluation interval is accepted: ``promtool check config`` passes, and a target is
  scraped at least 6 times within 3 s;
- start to ``/-/ready``: 0.12 s for Prometheus, 0.15 s for Alertmanager, 0.12 s for the Pushgateway;
- resident memory after 2 s, idle: Prometheus 44 MB, Alertmanager 34 MB, Pushgateway 13 MB (``memory_mb()``);
- Prometheus hands configured targets (and Alertmanagers) from discovery to its scraper on a fixed 5 s
  tick, so ``start()`` with targets, and every ``add_target``/``remove_target`` while running, return
  after 4-5 s, once ``/api/v1/targets`` lists exactly the configured targets: add the targets a chapter
  knows before ``start()``, in one go. With an Alertmanager configured, every reload (``set_rule_files`` too)
  takes 4-5 s as well: Prometheus rebuilds its list of Alertmanagers empty and refills it on that tick, and
  an alert that fires meanwhile is not delivered until it is resent (``ALERT_RESEND_DELAY``), so the reload
  waits for the list; give the rule files to the constructor when they are known;
- a reload (``POST /-/reload``) applies rule files before it answers (``/api/v1/rules`` lists them at once);
  when Prometheus refuses a reload (an invalid label name), the previous file is written back and reloaded;
- Prometheus 2.42 as packaged by Debian takes no lock on its TSDB: a second server on the same folder
  starts and both would write one WAL, so :meth:`Prometheus.start` refuses that. A start after a stop in the
  same folder works and finds the earlier samples (a chapter deletes its workspace first, so it starts empty).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Self

import pandas as pd
import psutil
import yaml

from .httpkit import BoundedServer, LimitedBodyHandler
from .servers import BackgroundServer

INSTALL_HELP = (
    "Install Prometheus, Alertmanager and the Pushgateway: on Debian/Ubuntu "
    "`sudo apt-get install prometheus prometheus-alertmanager prometheus-pushgateway`; on macOS "
    "`brew install prometheus alertmanager pushgateway`; elsewhere unpack the release archives from "
    "https://prometheus.io/download/ and put their folders on PATH.")

# Upstream names first, then Debian's (its packages rename two of the binaries).
TOOL_NAMES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
    "amtool": ("amtool",),
    "pushgateway": ("pushgateway", "prometheus-pushgateway"),
}
POLL_S = 0.1
# Prometheus may shift a sample's timestamp by up to 2 ms towards the ideal scrape time
# (ScrapeTimestampTolerance); a scrape counts as "after" a moment only beyond this margin.
TIMESTAMP_SLACK_S = 0.01
# Prometheus sends a firing alert once, then again only after this delay (default 1m): an alert that fired
# while Alertmanager was not yet known would reach it a minute late, longer than a chapter waits.
ALERT_RESEND_DELAY = "5s"


class MissingTool(RuntimeError):
    """A Prometheus tool is not installed; the message says how to install it."""


class PrometheusError(RuntimeError):
    """Prometheus refused a query or a reload; the message is Prometheus' own, with the expression."""


class ConfigError(RuntimeError):
    """A configuration the tool's own checker rejects; the message is the checker's."""


def find_tool(name: str) -> str:
    """The path of ``name`` ("prometheus", "promtool", "alertmanager", "amtool", "pushgateway") on PATH."""
    for candidate in TOOL_NAMES[name]:
        path = shutil.which(candidate)
        if path:
            return path
    raise MissingTool(f"{' or '.join(TOOL_NAMES[name])} is not on PATH. {INSTALL_HELP}")


def require_tools() -> dict[str, str]:
    """Every tool the monitoring chapters start, by name and path; :class:`MissingTool` naming all that are
    missing, with how to install them (a chapter calls this first, so it stops before doing anything)."""
    found, missing = {}, []
    for name in TOOL_NAMES:
        try:
            found[name] = find_tool(name)
        except MissingTool:
            missing.append(" or ".join(TOOL_NAMES[name]))
    if missing:
        raise MissingTool(f"not on PATH: {', '.join(missing)}. {INSTALL_HELP}")
    return found


def check_rules(paths: Iterable[str]) -> None:
    """``promtool check rules``; a file it rejects raises :class:`ConfigError` with promtool's message."""
    paths = list(paths)
    if not paths:
        return
    check = subprocess.run([find_tool("promtool"), "check", "rules", *paths], capture_output=True, text=True,
                           check=False)
    if check.returncode != 0:
        raise ConfigError(f"promtool check rules rejected the rule files:\n{(check.stdout + check.stderr).strip()}")


def _host_port(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _epoch(moment) -> float:
    """Seconds since the epoch from a number, a datetime or a pandas Timestamp (naive means UTC)."""
    if isinstance(moment, (int, float)):
        return float(moment)
    stamp = pd.Timestamp(moment)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()


def _http_json(url: str, data: dict | None = None, timeout: float = 10) -> dict:
    """GET (or POST the form ``data``) and decode JSON; an HTTP error's JSON body is returned as well."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, data=body, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {"status": "error", "error": f"HTTP {error.code}: {text.strip()}"}


def _wait(condition: Callable[[], object], timeout: float, what: str):
    """Poll ``condition`` every 0.1 s until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} (waited {timeout:g} s)")
        time.sleep(POLL_S)


class _Process:
    """What the three servers share: a BackgroundServer, start/stop, a context manager, memory."""

    name = "process"
    server: BackgroundServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def running(self) -> bool:
        return self.server.running

    def start(self):
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def memory_mb(self) -> float:
        """Resident memory of the running process, in MB."""
        return psutil.Process(self.server.process.pid).memory_info().rss / 1e6

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'on ' + self.url if self.running else 'stopped'}>"


class Prometheus(_Process):
    """A Prometheus server; ``prometheus.yml``, the TSDB (``data/``) and the log live under ``folder``.

    A second start in a used folder works once the first server has stopped: Prometheus locks its TSDB
    while running and reopens it afterwards, so the earlier series are still there (as after a restart in
    production). A second server on a folder whose Prometheus is still running is refused with
    :class:`ConfigError` before it starts.
    """

    def __init__(self, folder, *, scrape_interval: str = "500ms", evaluation_interval: str = "500ms",
                 rule_files: Iterable = (), alertmanager_url: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval
        self.rule_files = [str(Path(path).resolve()) for path in rule_files]
        self.alertmanager_url = alertmanager_url
        self._discovering = False   # started without waiting for the first discovery (start(wait=False))
        self.jobs: dict[str, dict] = {}   # job -> {"honor_labels": bool, "targets": {url: labels}}
        self.config_path = self.folder / "prometheus.yml"
        self.server = BackgroundServer(
            [find_tool("prometheus"), f"--config.file={self.config_path}",
             f"--storage.tsdb.path={self.folder / 'data'}", "--web.listen-address=127.0.0.1:{port}",
             "--web.enable-lifecycle", f"--rules.alert.resend-delay={ALERT_RESEND_DELAY}"],
            name="prometheus", health_path="/-/ready", log_path=self.folder / "prometheus.log")

    # --- configuration -------------------------------------------------------------------------------
    def config(self) -> dict:
        """The configuration as a dict, as written to ``prometheus.yml``."""
        config = {"global": {"scrape_interval": self.scrape_interval,
                             "evaluation_interval": self.evaluation_interval},
                  "rule_files": list(self.rule_files),
                  "scrape_configs": [self._scrape_config(job, spec) for job, spec in self.jobs.items()]}
        if self.alertmanager_url:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [_host_port(self.alertmanager_url)]}]}]}
        return config

    @staticmethod
    def _scrape_config(job: str, spec: dict) -> dict:
        return {"job_name": job, "honor_labels": spec["honor_labels"], "metrics_path": "/metrics",
                "static_configs": [{"targets": [_host_port(url)], "labels": labels}
                                   for url, labels in spec["targets"].items()]}

    def add_target(self, job: str, url: str, **labels) -> None:
        """Scrape ``url``/metrics as ``job``, with ``labels`` (e.g. ``variant="blue"``) on every series."""
        def change():
            spec = self.jobs.setdefault(job, {"honor_labels": False, "targets": {}})
            spec["targets"][url] = {key: str(value) for key, value in labels.items()}
        self._change(change)

    def add_pushgateway(self, pushgateway: Pushgateway | str, job: str = "pushgateway") -> None:
        """Scrape a Pushgateway with ``honor_labels: true``: the ``job`` and grouping labels of what a batch
        job pushed are kept as pushed, instead of being renamed ``exported_job`` and replaced by the
        Pushgateway's own job and instance (Prometheus' documented setting for a Pushgateway)."""
        url = pushgateway if isinstance(pushgateway, str) else pushgateway.url
        self._change(lambda: self.jobs.update({job: {"honor_labels": True, "targets": {url: {}}}}))

    def remove_target(self, job: str, url: str) -> None:
        def change():
            targets = self.jobs.get(job, {}).get("targets", {})
            targets.pop(url, None)
            if not targets:
                self.jobs.pop(job, None)
        self._change(change)

    def set_rule_files(self, paths: Iterable) -> None:
        """Evaluate these rule files (checked with ``promtool check rules`` first: a bad file raises
        :class:`ConfigError` with promtool's message and changes nothing)."""
        paths = [str(Path(path).resolve()) for path in paths]
        check_rules(paths)
        self._change(lambda: setattr(self, "rule_files", paths))

    def _write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def _change(self, change: Callable[[], None]) -> None:
        """Apply ``change`` to the configuration and, when running, reload. A reload Prometheus refuses
        (a bad rule file) raises with its message and leaves the previous configuration in place."""
        self.wait_until_configured()   # a reload before the first discovery would be measured against it
        before = copy.deepcopy((self.jobs, self.rule_files))
        change()
        self._write_config()
        if not self.running:
            return
        answer = _http_json(self.url + "/-/reload", data={})
        if answer and answer.get("status") == "error":
            self.jobs, self.rule_files = before
            self._write_config()
            _http_json(self.url + "/-/reload", data={})   # a failed reload may have applied its first parts
            raise PrometheusError(f"Prometheus kept its previous configuration; reload failed: {answer['error']}"
                                  + "".join(f"\n{line}" for line in self._logged_errors()))
        _wait(self._config_in_effect, 15, "Prometheus did not apply the new targets and rules")

    def _logged_errors(self, last: int = 3) -> list[str]:
        """The last error lines of the log (a failed reload's answer can be vaguer than its log)."""
        return [line for line in self.server.log_tail(50).splitlines() if "level=error" in line][-last:]

    def _config_in_effect(self) -> bool:
        """The rule files and scrape targets Prometheus reports are the ones configured."""
        groups = _http_json(self.url + "/api/v1/rules")["data"]["groups"]
        if {group["file"] for group in groups} != self._files_with_groups():
            return False
        if self.alertmanager_url and not self._alertmanager_known():
            return False
        return self._reported_targets() == {(job, _host_port(url)) for job, spec in self.jobs.items()
                                            for url in spec["targets"]}

    def _alertmanager_known(self) -> bool:
        """Prometheus discovered the Alertmanager (an alert firing before that is not sent at once)."""
        active = _http_json(self.url + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        return any(_host_port(manager["url"]) == _host_port(self.alertmanager_url) for manager in active)

    def _files_with_groups(self) -> set[str]:
        """The rule files that define a rule group (a file without one is not reported by Prometheus)."""
        return {path for path in self.rule_files
                if (yaml.safe_load(Path(path).read_text()) or {}).get("groups")}

    def _reported_targets(self) -> set[tuple[str, str]]:
        active = _http_json(self.url + "/api/v1/targets?state=active")["data"]["activeTargets"]
        return {(target["labels"]["job"], target["labels"]["instance"]) for target in active}

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, *, wait: bool = True) -> Prometheus:
        """Start the server; with ``wait``, return once it has discovered its targets and Alertmanager.

        Discovery takes up to 5 s whatever the configuration: Prometheus hands discovered targets on at most
        every 5 s (its discovery manager's fixed update interval), the first time 5 s after it starts. With
        ``wait=False`` that time is the caller's to use (start a model server meanwhile); the methods that
        need the targets (:meth:`wait_for_scrape`, :meth:`wait_for_rules`, a configuration change) wait for
        it first, and so does :meth:`wait_until_configured`.
        """
        if self.running:
            return self
        self._refuse_if_folder_in_use()
        check_rules(self.rule_files)
        self._write_config()
        self.server.start()
        self._discovering = bool(self.jobs or self.alertmanager_url)
        if wait:
            self.wait_until_configured()
        return self

    def wait_until_configured(self, timeout: float = 15) -> None:
        """Return once the running server reports the configured targets, rule files and Alertmanager."""
        if self._discovering:
            _wait(self._config_in_effect, timeout, "Prometheus did not load its targets and Alertmanager")
            self._discovering = False

    def _refuse_if_folder_in_use(self) -> None:
        for process in psutil.process_iter(["cmdline"]):
            if f"--storage.tsdb.path={self.folder / 'data'}" in (process.info["cmdline"] or []):
                raise ConfigError(f"another Prometheus (pid {process.pid}) uses {self.folder / 'data'}; stop "
                                  f"it first or give this one another folder")

    # --- queries -------------------------------------------------------------------------------------
    def _api(self, path: str, expr: str, params: dict) -> dict:
        answer = _http_json(f"{self.url}/api/v1/{path}", data={"query": expr, **params})
        if answer.get("status") != "success":
            raise PrometheusError(f"{expr!r}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str, at=None) -> pd.DataFrame:
        """An instant query: one row per series, a column per label and ``value`` (a range vector comes
        back in long form with ``time``, like :meth:`query_range`)."""
        data = self._api("query", expr, {} if at is None else {"time": _epoch(at)})
        kind, result = data["resultType"], data["result"]
        if kind in ("scalar", "string"):
            return pd.DataFrame({"value": [float(result[1]) if kind == "scalar" else result[1]]})
        if kind == "matrix":
            return _long_frame(result)
        rows = [{**series["metric"], "value": float(series["value"][1])} for series in result]
        return _frame(rows, ["value"])

    def query_range(self, expr: str, start, end, step) -> pd.DataFrame:
        """A range query in long form: labels, ``time`` (UTC Timestamp) and ``value``; ``step`` in seconds
        or a PromQL duration ("1s")."""
        data = self._api("query_range", expr, {"start": _epoch(start), "end": _epoch(end), "step": step})
        return _long_frame(data["result"])

    def value(self, expr: str, at=None) -> float:
        """The value of an expression with exactly one series; nan when there is none."""
        frame = self.query(expr, at)
        if len(frame) > 1:
            raise PrometheusError(f"{expr!r} returned {len(frame)} series, expected one:\n{frame}")
        return float(frame["value"].iloc[0]) if len(frame) else math.nan

    def alerts(self) -> pd.DataFrame:
        """The alerts pending or firing now: alertname, state, labels, active_at, value."""
        alerts = _http_json(self.url + "/api/v1/alerts")["data"]["alerts"]
        rows = [{"alertname": alert["labels"].get("alertname"), "state": alert["state"],
                 "labels": alert["labels"], "active_at": pd.Timestamp(alert["activeAt"]),
                 "value": float(alert["value"])} for alert in alerts]
        return _frame(rows, ["alertname", "state", "labels", "active_at", "value"])

    def targets(self) -> pd.DataFrame:
        """The scrape targets: job, instance, health (up/down/unknown), last_scrape, last_error."""
        active = _http_json(self.url + "/api/v1/targets?state=active")["data"]["activeTargets"]
        rows = [{"job": target["labels"]["job"], "instance": target["labels"]["instance"],
                 "health": target["health"], "last_scrape": pd.Timestamp(target["lastScrape"]),
                 "last_error": target["lastError"]} for target in active]
        return _frame(rows, ["job", "instance", "health", "last_scrape", "last_error"])

    def wait_for_scrape(self, job: str | None = None, timeout: float = 10) -> None:
        """Return once every target (of ``job``) has been scraped successfully after this call, and the
        samples are stored: what a target exposed before the call is visible to queries afterwards."""
        self.wait_until_configured()
        since = time.time() + TIMESTAMP_SLACK_S
        expected = {(name, _host_port(url)) for name, spec in self.jobs.items() if job in (None, name)
                    for url in spec["targets"]}
        if not expected:
            raise ValueError(f"no targets{' for job ' + repr(job) if job else ''} to wait for")
        selector = f'{{job="{job}"}}' if job else ""

        def all_scraped() -> bool:
            up = self.query(f"up{selector}")
            stamps = self.query(f"timestamp(up{selector})")
            fresh = {(row.job, row.instance) for row in stamps.itertuples() if row.value > since}
            healthy = {(row.job, row.instance) for row in up.itertuples() if row.value == 1}
            return expected <= (fresh & healthy)

        try:
            _wait(all_scraped, timeout, f"not every target{' of ' + job if job else ''} was scraped successfully")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; targets now:\n{self.targets().to_string()}") from None

    def wait_for_rules(self, timeout: float = 10) -> None:
        """Return once every rule group has been evaluated after this call: alerts and recorded series then
        reflect what was scraped before it (call :meth:`wait_for_scrape` first for a change of the targets)."""
        self.wait_until_configured()
        since = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=TIMESTAMP_SLACK_S)

        def evaluated() -> bool:
            groups = _http_json(self.url + "/api/v1/rules")["data"]["groups"]
            if not groups:
                raise PrometheusError("no rule groups are loaded: nothing to wait for")
            return all(pd.Timestamp(group["lastEvaluation"]) > since for group in groups)

        _wait(evaluated, timeout, "not every rule group was evaluated")

    def wait_until(self, expr: str, predicate: Callable[[pd.DataFrame], bool] = lambda frame: len(frame) > 0,
                   timeout: float = 15) -> pd.DataFrame:
        """Query ``expr`` every 0.1 s until ``predicate(frame)`` holds; return that frame."""
        last = {}

        def satisfied():
            last["frame"] = frame = self.query(expr)
            return predicate(frame) and [frame]

        try:
            return _wait(satisfied, timeout, f"{expr!r} did not satisfy the condition")[0]
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last answer:\n{last.get('frame')}") from None


def _frame(rows: list[dict], tail: list[str]) -> pd.DataFrame:
    """Rows as a frame with the label columns sorted first and ``tail`` last (also when empty)."""
    labels = sorted({key for row in rows for key in row} - set(tail))
    return pd.DataFrame(rows, columns=labels + tail)


def _long_frame(result: list[dict]) -> pd.DataFrame:
    rows = [{**series["metric"], "time": pd.Timestamp(stamp, unit="s", tz="UTC"), "value": float(value)}
            for series in result for stamp, value in series["values"]]
    return _frame(rows, ["time", "value"])


class Alertmanager(_Process):
    """An Alertmanager routing to webhooks; ``alertmanager.yml``, its storage and log live under ``folder``.

    ``webhook_urls`` maps a receiver name to a URL; the first is the default receiver. ``route`` (optional)
    is merged over the default route (group by alertname, the given timings). Clustering is off
    (``--cluster.listen-address=``), so nothing binds port 9094. ``amtool check-config`` validates the file
    before start; a bad configuration raises :class:`ConfigError` with amtool's message.
    """

    def __init__(self, folder, *, webhook_urls: dict[str, str], route: dict | None = None,
                 inhibit_rules: Iterable[dict] = (), group_wait: str = "500ms", group_interval: str = "1s",
                 repeat_interval: str = "1h"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        default_route = {"receiver": next(iter(webhook_urls)), "group_by": ["alertname"],
                         "group_wait": group_wait, "group_interval": group_interval,
                         "repeat_interval": repeat_interval}
        self.config = {
            "route": {**default_route, **(route or {})},
            "receivers": [{"name": name, "webhook_configs": [{"url": url, "send_resolved": True}]}
                          for name, url in webhook_urls.items()],
            "inhibit_rules": list(inhibit_rules)}
        self.config_path = self.folder / "alertmanager.yml"
        self.server = BackgroundServer(
            [find_tool("alertmanager"), f"--config.file={self.config_path}",
             f"--storage.path={self.folder / 'data'}", "--web.listen-address=127.0.0.1:{port}",
             "--cluster.listen-address="],
            name="alertmanager", health_path="/-/ready", log_path=self.folder / "alertmanager.log")

    def start(self) -> Alertmanager:
        if self.running:
            return self
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        check = subprocess.run([find_tool("amtool"), "check-config", str(self.config_path)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise ConfigError(f"amtool check-config rejected {self.config_path}:\n"
                              f"{(check.stdout + check.stderr).strip()}")
        self.server.start()
        return self

    def alerts(self) -> pd.DataFrame:
        """The alerts Alertmanager holds (``/api/v2/alerts``): alertname, state (active/suppressed),
        inhibited_by, silenced_by, labels, starts_at, receivers."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=10) as response:
            alerts = json.loads(response.read())
        rows = [{"alertname": alert["labels"].get("alertname"), "state": alert["status"]["state"],
                 "inhibited_by": alert["status"]["inhibitedBy"], "silenced_by": alert["status"]["silencedBy"],
                 "labels": alert["labels"], "starts_at": pd.Timestamp(alert["startsAt"]),
                 "receivers": [receiver["name"] for receiver in alert["receivers"]]} for alert in alerts]
        return _frame(rows, ["alertname", "state", "inhibited_by", "silenced_by", "labels", "starts_at",
                             "receivers"])

    def post_alert(self, labels: dict, annotations: dict | None = None) -> None:
        """Send one firing alert to ``/api/v2/alerts``, as Prometheus does (any monitor that is not Prometheus,
        a batch job say, can alert this way); Alertmanager groups and routes it like any other."""
        body = json.dumps([{"labels": {k: str(v) for k, v in labels.items()},
                            "annotations": {k: str(v) for k, v in (annotations or {}).items()},
                            "startsAt": datetime.now(timezone.utc).isoformat()}]).encode()
        request = urllib.request.Request(self.url + "/api/v2/alerts", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as error:
            raise PrometheusError(f"Alertmanager refused the alert: HTTP {error.code}: "
                                  f"{error.read().decode(errors='replace').strip()}") from None

    def wait_until(self, predicate: Callable[[pd.DataFrame], bool], timeout: float = 15) -> pd.DataFrame:
        """Read :meth:`alerts` every 0.1 s until ``predicate(alerts)`` holds; return that frame."""
        last = {}

        def satisfied():
            last["alerts"] = alerts = self.alerts()
            return predicate(alerts) and [alerts]

        try:
            return _wait(satisfied, timeout, "Alertmanager's alerts did not satisfy the condition")[0]
        except TimeoutError as error:
            raise TimeoutError(f"{error}; its alerts now:\n{last.get('alerts')}") from None


class Pushgateway(_Process):
    """A Pushgateway; its persistence file and log live under ``folder``, so pushed results survive a
    restart in the same folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = BackgroundServer(
            [find_tool("pushgateway"), "--web.listen-address=127.0.0.1:{port}",
             f"--persistence.file={self.folder / 'pushgateway.data'}"],
            name="pushgateway", health_path="/-/ready", log_path=self.folder / "pushgateway.log")

    def push(self, job: str, registry, **grouping) -> None:
        """Replace the metrics of group (``job``, ``grouping``) with those of ``registry``."""
        from prometheus_client import push_to_gateway
        push_to_gateway(self.url, job=job, registry=registry, grouping_key=grouping or None)

    def delete(self, job: str, **grouping) -> None:
        from prometheus_client import delete_from_gateway
        delete_from_gateway(self.url, job=job, grouping_key=grouping or None)


class WebhookReceiver:
    """An HTTP server in this process that records Alertmanager's notifications.

    Each POST is appended to ``folder/notifications.jsonl`` as one JSON line: Alertmanager's payload plus
    ``received_at`` (ISO time, UTC) and ``forward_error``. ``forward(payload)``, if given, is called for each
    (e.g. to start a retraining pipeline); if it raises, the error is recorded and the answer is 500, so
    Alertmanager retries.
    """

    def __init__(self, folder, forward: Callable[[dict], object] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "notifications.jsonl"
        self.forward = forward
        self._lock = threading.Lock()
        self._server: BoundedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> WebhookReceiver:
        if self._server is None:
            self._server = BoundedServer(("127.0.0.1", 0), self._handler_class(), max_threads=8)
            threading.Thread(target=self._server.serve_forever, args=(POLL_S,), name="webhook-receiver",
                             daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler_class(self):
        receiver = self

        class Handler(LimitedBodyHandler):
            def do_POST(self):
                body = self.read_body()
                if body is None:
                    return
                status, answer = receiver._record(body)
                self.send_json(status, json.dumps(answer).encode())

            def log_message(self, *args):  # keep the notebook's output clean
                pass

        return Handler

    def _record(self, body: bytes) -> tuple[int, dict]:
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as error:
            return 400, {"error": f"not JSON: {error}"}
        record = {**payload, "received_at": datetime.now(timezone.utc).isoformat(), "forward_error": None}
        try:
            if self.forward is not None:
                self.forward(payload)
        except Exception as error:  # noqa: BLE001  any failure is recorded and answered 500: AM retries
            record["forward_error"] = f"{type(error).__name__}: {error}"
        with self._lock, open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
        return (500, {"error": record["forward_error"]}) if record["forward_error"] else (200, {"status": "ok"})

    def notifications(self) -> list[dict]:
        """Every notification received so far, oldest first."""
        with self._lock:
            if not self.path.exists():
                return []
            return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def wait_for(self, predicate: Callable[[dict], bool] = lambda notification: True,
                 timeout: float = 15) -> dict:
        """The first notification for which ``predicate`` holds, waiting up to ``timeout`` s for it."""
        def found():
            return next((n for n in self.notifications() if predicate(n)), None)
        return _wait(found, timeout, f"no matching notification among {len(self.notifications())} received")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
