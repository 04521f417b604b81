"""A small load generator: threads with kept-alive connections POSTing MLflow payloads, every request timed.

>>> bodies = payloads(request_frame(stream.month(3)), rows_per_request=1)
>>> log = run_load(router.url, bodies, rate=100, duration_s=5, concurrency=4)   # a DataFrame, one row each

Each client thread holds one ``http.client`` connection (as a real client library would) and sends at a
steady share of the total ``rate``. Open loop: each request has its slot on a fixed schedule, whatever the
answers; a request whose slot comes while its thread still waits for an earlier answer is sent late, and its
latency is measured from its slot, so the wait counts (no *coordinated omission*: a stalled server cannot hide
the requests it kept from being sent). The log has, per request: ``t`` (Unix time the request was due; in a
closed loop, when it was sent), ``latency_s`` (from then to the answer: what the client waited, queueing in
the client included), ``service_s`` (from the moment it was sent to the answer: what the server and the router
took; compare variants on this, since a thread held up by a slow answer delays the next request it sends,
whichever variant that one goes to), ``status``
(0 = no answer at all: connection refused or timed out), ``variant`` (the router's ``X-Variant`` header),
``retried``, ``user_id``, ``index`` (which payload was sent) and ``predictions`` (the scores returned,
[] on an error).
"""
from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Callable, Sequence
from urllib.parse import urlsplit

import numpy as np
import pandas as pd


def payloads(frame: pd.DataFrame, rows_per_request: int = 1, form: str = "dataframe_split") -> list[bytes]:
    """JSON bodies in MLflow's format, ``rows_per_request`` rows each (``form``: dataframe_split,
    dataframe_records or inputs). The frame is converted to JSON once, then sliced: fast for many bodies."""
    split = json.loads(frame.to_json(orient="split", index=False))
    columns, data = split["columns"], split["data"]
    bodies = []
    for start in range(0, len(data) - rows_per_request + 1, rows_per_request):
        rows = data[start:start + rows_per_request]
        if form == "dataframe_split":
            payload = {"dataframe_split": {"columns": columns, "data": rows}}
        elif form == "dataframe_records":
            payload = {"dataframe_records": [dict(zip(columns, row)) for row in rows]}
        elif form == "inputs":
            payload = {"inputs": {c: [row[j] for row in rows] for j, c in enumerate(columns)}}
        else:
            raise ValueError(f"unknown form {form!r}")
        bodies.append(json.dumps(payload).encode())
    return bodies


def post(url: str, body: bytes | str, content_type: str = "application/json", headers: dict | None = None,
         timeout: float = 10) -> tuple[int, dict, dict]:
    """One POST on a fresh connection: (status, JSON answer or {'text': ...}, response headers)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path or "/", body=body if isinstance(body, bytes) else body.encode(),
                     headers={"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"text": raw.decode(errors="replace")}
        return response.status, answer, dict(response.getheaders())
    finally:
        conn.close()


def get_json(url: str, timeout: float = 10) -> dict:
    return json.loads(get_text(url, timeout))


def get_text(url: str, timeout: float = 10) -> str:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


LOG_COLUMNS = ["t", "latency_s", "service_s", "status", "variant", "retried", "user_id", "index", "predictions"]


class _Client:
    """One kept-alive connection; reconnects after a failure."""

    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, (parts.path or "") + "/invocations"
        self.timeout, self.conn = timeout, None

    def send(self, body: bytes, headers: dict) -> tuple[int, str, bool, list]:
        for attempt in (0, 1):  # a kept-alive connection the server closed is reopened once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", self.path, body=body, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                return (response.status, response.getheader("X-Variant", ""),
                        response.getheader("X-Retried", "0") == "1", _predictions(raw, response.status))
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 1:
                    return 0, "", False, []
            except (OSError, http.client.HTTPException):
                self.close()
                return 0, "", False, []
        return 0, "", False, []

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(url: str, bodies: Sequence[bytes], *, rate: float | None = 100.0, duration_s: float | None = None,
             requests: int | None = None, concurrency: int = 4, user_ids: Sequence[str] | None = None,
             target_variant: Callable[[int], str | None] | None = None, stop: Callable[[], bool] | None = None,
             timeout: float = 10.0) -> pd.DataFrame:
    """Send ``bodies`` (cycled) to ``url``/invocations and log every request.

    Stops after ``duration_s`` seconds (open loop: once the schedule reaches it, so that every request due
    before it is sent and timed, but at most ``timeout`` seconds later), after ``requests`` requests, or when ``stop()`` turns true (checked every
    0.1 s), whichever comes first. ``rate=None`` sends as fast as the threads can (closed loop).
    ``user_ids[i]`` is sent as ``X-User-Id`` with request ``i``; ``target_variant(i)`` as ``X-Target-Variant``.
    """
    if duration_s is None and requests is None and stop is None:
        raise ValueError("give duration_s, requests or stop, or the load never ends")
    counter = iter(range(requests if requests is not None else 10**12))
    lock, finished = threading.Lock(), threading.Event()
    logs: list[list] = [[] for _ in range(concurrency)]
    start_wall, start = time.time(), time.perf_counter()
    deadline = start + duration_s if duration_s is not None else float("inf")
    interval = concurrency / rate if rate else 0.0

    def worker(k: int):
        client = _Client(url, timeout)
        next_send = start + (interval * k / concurrency if interval else 0.0)
        try:
            while not finished.is_set():
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                due = next_send if interval else time.perf_counter()  # the request's slot on the schedule
                if due >= deadline or finished.is_set():
                    break
                if interval:
                    time.sleep(max(0.0, due - time.perf_counter()))  # no wait if this thread is behind
                    next_send += interval
                headers = {"Content-Type": "application/json"}
                user = user_ids[i % len(user_ids)] if user_ids is not None else None
                if user is not None:
                    headers["X-User-Id"] = user
                target = target_variant(i) if target_variant is not None else None
                if target:
                    headers["X-Target-Variant"] = target
                sent = time.perf_counter()
                status, variant, retried, scores = client.send(bodies[i % len(bodies)], headers)
                answered = time.perf_counter()
                logs[k].append((start_wall + (due - start), answered - due, answered - sent, status, variant,
                                retried, user, i, scores))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        # An open-loop worker stops itself at the deadline, after sending every request due before it; if its
        # backlog is still not sent one request timeout later (a hung server), the run ends there regardless.
        overrun = 0.0 if not interval else timeout
        if (stop is not None and stop()) or time.perf_counter() >= deadline + overrun:
            finished.set()
        for thread in threads:
            thread.join(timeout=0.1)
    rows = [row for log in logs for row in log]
    frame = pd.DataFrame(rows, columns=LOG_COLUMNS)
    return frame.sort_values("t", ignore_index=True)


def interleaved(urls: dict[str, str], bodies: Sequence[bytes], *, requests: int, warmup: int = 30,
                timeout: float = 10.0) -> dict[str, pd.DataFrame]:
    """Time several servers on the same requests, taking turns: one log per server, as :func:`run_load`'s.

    Request ``i`` goes to every server in turn, the order rotating with ``i``, each over its own kept-alive
    connection. Measuring one server after the other confounds the server with whatever else the machine
    was doing at the time (a busy neighbour, a CI job); taking turns spreads that load over all of them
    alike, so their row ``i`` are a pair that can be compared (:func:`faster_in_pairs`).
    """
    names = list(urls)
    clients = {name: _Client(url, timeout) for name, url in urls.items()}
    rows: dict[str, list] = {name: [] for name in names}
    try:
        for i in range(-warmup, requests):
            body = bodies[i % len(bodies)]
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                sent_wall, sent = time.time(), time.perf_counter()
                status, variant, retried, scores = clients[name].send(body, {"Content-Type": "application/json"})
                if i >= 0:
                    took = time.perf_counter() - sent
                    rows[name].append((sent_wall, took, took, status, variant, retried, None, i, scores))
    finally:
        for client in clients.values():
            client.close()
    return {name: pd.DataFrame(rows[name], columns=LOG_COLUMNS) for name in names}


def faster_in_pairs(fast: pd.DataFrame, slow: pd.DataFrame) -> dict:
    """Sign test on paired requests (logs of :func:`interleaved`): is ``fast`` quicker than ``slow``?

    ``wins`` counts the pairs where ``fast`` answered first; if neither server were faster, ``wins`` would be
    Binomial(pairs, 1/2), and ``p_value`` is the chance of at least this many wins under that null.
    """
    from scipy.stats import binomtest

    paired = fast.set_index("index")["latency_s"].to_frame("fast").join(
        slow.set_index("index")["latency_s"].to_frame("slow"), how="inner")
    wins = int((paired["fast"] < paired["slow"]).sum())
    return {"pairs": len(paired), "wins": wins, "share": wins / max(len(paired), 1),
            "median_ratio": float((paired["slow"] / paired["fast"]).median()),
            "p_value": float(binomtest(wins, len(paired), 0.5, alternative="greater").pvalue)}


def _predictions(raw: bytes, status: int) -> list:
    if status != 200:
        return []
    try:
        return json.loads(raw).get("predictions", [])
    except (ValueError, AttributeError):
        return []


def summarize(log: pd.DataFrame) -> dict:
    """Requests, errors (status 0 or >= 500), error rate, latency mean and percentiles (ms), throughput.

    The mean is what Little's law needs (requests in system = arrival rate x *mean* time in system); the
    percentiles are what a latency objective is written in.
    """
    if log.empty:
        return {"requests": 0}
    span = max(log["t"].max() + log["latency_s"].iloc[-1] - log["t"].min(), 1e-9)
    failed = (log["status"] == 0) | (log["status"] >= 500)
    ms = log["latency_s"].to_numpy() * 1e3
    return {"requests": len(log), "errors": int(failed.sum()), "error_rate": float(failed.mean()),
            "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "rps": float(len(log) / span)}


def rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its children: what a server really costs."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in family:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6


def timeline(log: pd.DataFrame, start: float, bin_s: float = 0.25) -> pd.DataFrame:
    """Per time bin since ``start``: requests, green's share, client errors by variant, p99 latency (ms)."""
    frame = log.assign(bin=((log["t"] - start) // bin_s * bin_s).round(6),
                       failed=(log["status"] == 0) | (log["status"] >= 500), ms=log["latency_s"] * 1e3)
    grouped = frame.groupby("bin")
    out = pd.DataFrame({"requests": grouped.size(),
                        "green_share": grouped["variant"].apply(lambda v: float((v == "green").mean())),
                        "errors": grouped["failed"].sum()})
    for variant in ("blue", "green"):
        part = frame[frame["variant"] == variant].groupby("bin")
        out[f"p99_ms_{variant}"] = part["ms"].quantile(0.99)
        out[f"errors_{variant}"] = part["failed"].sum()
    return out.fillna({"errors_blue": 0, "errors_green": 0})


def timeline_figure(log: pd.DataFrame, events: list[dict], title: str, bin_s: float = 0.25):
    """Traffic share, client errors and p99 latency over time, with the deployment's events marked."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    start = events[0]["t"] if events else float(log["t"].min())
    table = timeline(log, start, bin_s)
    fig, (share, errors, latency) = plt.subplots(3, 1, figsize=(8.5, 5.6), sharex=True,
                                                 gridspec_kw={"height_ratios": [1.2, 1, 1]})
    share.fill_between(table.index, table["green_share"], step="post", color="#2ca02c", alpha=0.35,
                       label="share answered by green")
    steps_t = [e["t"] - start for e in events] + [table.index.max() + bin_s]
    steps_w = [e["green_weight"] for e in events] + [events[-1]["green_weight"] if events else 0]
    share.step(steps_t, steps_w, where="post", color="#2ca02c", lw=1.5, label="planned green weight")
    share.set(ylim=(-0.05, 1.05), ylabel="green share")
    share.legend(loc="upper left", fontsize=8)
    errors.bar(table.index, table["errors_blue"], width=bin_s, align="edge", color="#1f77b4", label="blue")
    errors.bar(table.index, table["errors_green"], width=bin_s, align="edge", bottom=table["errors_blue"],
               color="#d62728", label="green")
    errors.set(ylabel=f"client errors\nper {bin_s:g} s", ylim=(0, max(1.0, float(table["errors"].max()) * 1.15)))
    errors.legend(loc="upper right", fontsize=8)
    for variant, colour in (("blue", "#1f77b4"), ("green", "#2ca02c")):
        latency.plot(table.index, table[f"p99_ms_{variant}"], ".-", color=colour, label=f"p99 {variant}")
    latency.set(ylabel="p99 latency (ms)", yscale="log", xlabel="seconds since the deployment started")
    latency.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    latency.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    latency.legend(loc="upper left", fontsize=8)
    for event in events[1:]:
        text = event.get("event", "")
        colour = "#d62728" if "ALARM" in text or "rolled back" in text else \
            "#2ca02c" if "switch" in text else "#7f7f7f"
        for ax in (share, errors, latency):
            ax.axvline(event["t"] - start, color=colour, ls="--", lw=1)
        if colour != "#7f7f7f":
            share.annotate(text.split(":")[0], (event["t"] - start, 1.02), fontsize=8, color=colour,
                           ha="right", va="bottom")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
