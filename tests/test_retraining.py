"""Retraining: the data contract and quarantine, the guard against re-triggering, the simulated year."""
from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from mlops_lab.retraining import (RetrainGuard, YearConfig, quarantine, simulate_year, validate_batch)
from mlops_lab.simulator import CreditStream, Drift


@pytest.fixture(scope="module")
def batch():
    return CreditStream(seed=4, rows_per_month=500).month(2)


def test_a_clean_batch_passes(batch):
    report = validate_batch(batch, "2024-03")
    assert report.ok and "passes every check" in report.to_markdown()


def test_corrupt_batch_names_every_problem(batch):
    bad = batch.copy()
    bad["income"] = bad["income"].astype(object)
    bad.loc[bad.index[:5], "income"] = np.nan
    bad.loc[bad.index[5:8], "credit_score"] = 9999
    bad["purpose"] = bad["purpose"].astype(str)
    bad.loc[bad.index[8], "purpose"] = "crypto"
    bad.loc[bad.index[9], "income"] = "n/a"
    bad = bad.drop(columns="delinquencies_2y")
    report = validate_batch(bad, "2024-03")
    assert not report.ok
    found = {(row.check, row.column): row.rows for row in report.problems.itertuples()}
    assert found[("missing values", "income")] == 5
    assert found[("out of range [300, 850]", "credit_score")] == 3
    assert found[("unknown category", "purpose")] == 1
    assert found[("schema: not a number", "income")] == 1
    assert ("schema: column missing", "delinquencies_2y") in found
    text = report.to_markdown()
    assert "quarantined" in text and "9999" in text and "crypto" in text


def test_label_and_whole_number_checks(batch):
    bad = batch.copy()
    bad["default"] = bad["default"].astype(float)
    bad.loc[bad.index[0], "default"] = 2
    bad["age"] = bad["age"].astype(float)
    bad.loc[bad.index[1], "age"] = 40.5
    found = set(validate_batch(bad).problems["check"])
    assert {"value not allowed", "not a whole number"} <= found
    assert validate_batch(batch.drop(columns="default"), require_label=False).ok


def test_quarantine_moves_the_file_and_writes_a_report(tmp_path, batch):
    incoming = tmp_path / "incoming" / "2024-03.csv"
    incoming.parent.mkdir()
    bad = batch.copy()
    bad.loc[bad.index[:2], "age"] = -1
    bad.to_csv(incoming, index=False)
    report_path = quarantine(incoming, validate_batch(bad, incoming.name), tmp_path / "quarantine")
    assert not incoming.exists()
    assert (tmp_path / "quarantine" / "2024-03.csv").exists()
    assert "out of range [18, 100]" in report_path.read_text()


def _try(path, queue):
    queue.put(RetrainGuard(path).acquire("from another process"))


def test_guard_suppresses_while_busy_and_across_processes(tmp_path):
    guard = RetrainGuard(tmp_path / "retrain.lock")
    assert guard.acquire("drift alarm week 21")
    assert guard.busy and guard.holder()["reason"] == "drift alarm week 21"
    assert not guard.acquire("drift alarm week 22")
    assert guard.suppressed == ["drift alarm week 22"]
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=_try, args=(guard.path, queue))
    process.start()
    process.join(10)
    assert queue.get(timeout=5) is False
    guard.release()
    assert not guard.busy and guard.acquire("drift alarm week 24")
    guard.release()


def test_guard_breaks_a_stale_lock(tmp_path):
    old = RetrainGuard(tmp_path / "retrain.lock", stale_after_s=0.05)
    assert old.acquire("a retrain that crashed")
    time.sleep(0.1)
    assert old.acquire("the next alarm")
    old.release()


def test_simulated_year_policies():
    stream = CreditStream(seed=7, rows_per_month=600,
                          drift=Drift(covariate=1.0, concept=2.0, start_month=10, ramp_months=3))
    config = YearConfig(weeks=24, every=4)
    results = {policy: simulate_year(stream, policy, config) for policy in ("none", "scheduled", "drift")}
    assert results["none"]["version"].eq(1).all() and not results["none"]["retrain_started"].any()
    assert results["scheduled"]["retrain_started"].sum() == 5
    drift = results["drift"]
    assert not drift.loc[:9, "retrain_started"].any(), "no false alarm before the drift starts"
    assert drift["retrain_started"].any() and drift.loc[10:, "drifted_features"].max() > 3
    # a retrain is pending for two weeks: an alarm meanwhile is suppressed, not a second retrain
    started = drift.index[drift["retrain_started"]]
    assert all(not drift.loc[w + 1, "retrain_started"] for w in started if w + 1 in drift.index)
    late = slice(16, None)
    assert drift.loc[late, "accuracy"].mean() > results["none"].loc[late, "accuracy"].mean() + 0.02
    with pytest.raises(ValueError, match="policy"):
        simulate_year(stream, "weekly", config)


class _Backend:
    """A stand-in model server on a thread: answers /invocations with one score per request, or HTTP 500."""

    def __init__(self, status: int):
        import http.server
        import threading

        status_code = status

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self._answer(200, b"{}")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(status_code, b'{"predictions": [0.1]}' if status_code == 200 else b'{"error": "boom"}')

            def _answer(self, code, body):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("green_status, outcome", [(200, "promoted"), (500, "rolled_back")])
def test_canary_release_promotes_a_healthy_green_and_rolls_back_a_failing_one(green_status, outcome):
    from mlops_lab.retraining import canary_release
    from mlops_lab.router import router_command
    from mlops_lab.servers import BackgroundServer

    blue, green = _Backend(200), _Backend(green_status)
    bodies = [b'{"dataframe_split": {"columns": ["age"], "data": [[30]]}}']
    try:
        with BackgroundServer(router_command(blue.url, period_s=0.25), name="router", health_path="/ping") as router:
            result = canary_release(router.url, green.url, bodies, canary_size=0.3, bake_s=1.0, final_bake_s=0.5,
                                    alarms=({"metric": "error_rate", "threshold": 0.05, "min_requests": 2},),
                                    rate=80, timeout_s=20)
    finally:
        blue.close(), green.close()
    assert result["outcome"] == outcome
    assert result["green_weight"] == (1.0 if outcome == "promoted" else 0.0)
    assert result["client"]["requests"] > 0 and 0 < result["green_share"] < 1
    assert any("rolled back" in e["event"] for e in result["events"]) == (outcome == "rolled_back")


def test_chapter_12_checks_say_right_and_wrong(monkeypatch, capsys, batch):
    import pandas as pd

    from mlops_lab.checks import WrongAnswer
    from mlops_lab.exercises import ch12

    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")
    windows = pd.DataFrame({"rule": ["psi_0.1"] * 4 + ["test_holm"], "days": [1, 2, 3, 5, 1],
                            "false_alarm_rate": [0.9, 0.2, 0.0, 0.0, 0.0],
                            "delay_days_0.5": [1.0, 2.0, 3.0, 20.0, 1.0]})
    assert ch12.smallest_good_window(windows) == 3
    ch12.check_window(3, windows)
    for wrong in (1, 5):
        with pytest.raises(WrongAnswer):
            ch12.check_window(wrong, windows)
    ch12.check_uncorrected_rate(1 - 0.95 ** 11)
    with pytest.raises(WrongAnswer):
        ch12.check_uncorrected_rate(0.05)
    odd = batch.copy()
    odd.loc[odd.index[:3], "loan_term"] = 48
    ch12.check_flagged_columns({"loan_term"}, odd)
    with pytest.raises(WrongAnswer):
        ch12.check_flagged_columns({"loan_term", "income"}, odd)
    assert ch12.expected_delay(7, 0.5) == 14 and ch12.expected_delay(7, 0) == float("inf")
    assert capsys.readouterr().out.count("correct") == 3
