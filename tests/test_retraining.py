"""Retraining: the data contract and quarantine, the guard against re-triggering, the simulated year on the clock."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from mlops_lab.models import train
from mlops_lab.monitoring import AlarmRule
from mlops_lab.retraining import (ALARM, POLICIES, RetrainGuard, SimulatedYear, YearConfig, _design, _score_all,
                                  alarm_state, compare_policies, quarantine, simulate_year, validate_batch)
from mlops_lab.simulator import (EARLY_LABEL, FEATURES, TARGET, CreditStream, Drift, LabelFromTheFuture, known_as_of,
                                 month_label, newest_complete_month, snapshot)


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
    assert "fails the contract" in text and "9999" in text and "crypto" in text


def test_label_and_whole_number_checks(batch):
    bad = batch.copy()
    bad["default"] = bad["default"].astype(float)
    bad.loc[bad.index[0], "default"] = 2
    bad["age"] = bad["age"].astype(float)
    bad.loc[bad.index[1], "age"] = 40.5
    found = set(validate_batch(bad).problems["check"])
    assert {"value not allowed", "not a whole number"} <= found
    assert validate_batch(batch.drop(columns="default"), require_label=False).ok


@pytest.mark.parametrize("as_of", ["2024-03-15", "2024-08-01", "2025-06-01"])
def test_a_snapshot_with_unknown_labels_passes_also_through_csv(tmp_path, batch, as_of):
    view = snapshot(batch, as_of)
    assert view[TARGET].isna().any() and view[EARLY_LABEL].isna().any()   # declined, or not known yet
    assert validate_batch(view, as_of).ok
    view.to_csv(tmp_path / "export.csv", index=False)
    assert validate_batch(pd.read_csv(tmp_path / "export.csv"), as_of).ok


def test_a_known_label_must_be_valid_on_a_loan_and_dated(batch):
    view = snapshot(batch, "2025-06-01")
    loans, declined = view.index[view["approved"]], view.index[~view["approved"]]
    bad = view.copy()
    bad[TARGET] = bad[TARGET].astype("Float64")
    bad.loc[loans[0], TARGET] = 2                            # not an allowed value
    bad.loc[declined[:3], EARLY_LABEL] = 1                   # the lender never observes a declined applicant
    bad.loc[loans[1], "default_known"] = pd.NaT              # a label without the date it became known
    found = {(row.check, row.column): row.rows for row in validate_batch(bad).problems.itertuples()}
    assert found == {("value not allowed", TARGET): 1, ("label on a declined application", EARLY_LABEL): 3,
                     ("label without early_delinquency_known", EARLY_LABEL): 3,   # a declined loan has no date
                     ("label without default_known", TARGET): 1}


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


def _hold(path, ready, stop):
    """A retrain in another process: takes the lock, says so, and holds it until told to stop (or killed)."""
    guard = RetrainGuard(path)
    ready.put(guard.acquire("a long retrain"))
    stop.wait(60)
    guard.release()


def _holder(path):
    fork = multiprocessing.get_context("fork")
    ready, stop = fork.Queue(), fork.Event()
    process = fork.Process(target=_hold, args=(path, ready, stop))
    process.start()
    assert ready.get(timeout=10) is True
    return process, stop


def test_a_long_retrain_keeps_its_lock_however_old(tmp_path):
    path = tmp_path / "retrain.lock"
    process, stop = _holder(path)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "since": time.time() - 30 * 24 * 3600}))   # started a month ago
    try:
        assert not RetrainGuard(path).acquire("the next alarm"), "a running retrain lost its lock to a timeout"
    finally:
        stop.set()
        process.join(10)


def test_a_killed_retrain_frees_the_lock(tmp_path):
    path = tmp_path / "retrain.lock"
    process, _ = _holder(path)
    assert RetrainGuard(path).busy
    os.kill(process.pid, signal.SIGKILL)            # a crash: no release() runs
    process.join(10)
    guard = RetrainGuard(path)
    assert not guard.busy and guard.acquire("the next alarm")
    guard.release()


def _race(path, start, results):
    start.wait(10)
    guard = RetrainGuard(path)
    won = guard.acquire("racing")
    results.put(won)
    time.sleep(0.2)                                 # hold it while the other one tries
    guard.release()


def test_two_processes_never_both_take_the_lock(tmp_path):
    fork = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"retrain-{round_}.lock"
        path.write_text(json.dumps({"reason": "a retrain that died", "since": 0, "pid": 1}))   # left behind
        start, results = fork.Barrier(2), fork.Queue()
        racers = [fork.Process(target=_race, args=(path, start, results)) for _ in range(2)]
        for racer in racers:
            racer.start()
        won = sorted(results.get(timeout=10) for _ in racers)
        for racer in racers:
            racer.join(10)
        assert won == [False, True], f"round {round_}: {won}"


# ---- the simulated year on the clock ----------------------------------------------------------------------
WORLDS = {"downturn": Drift(covariate=1.0, concept=2.0, start_month=1, ramp_months=3),
          "concept": Drift(concept=2.0, start_month=1, ramp_months=3)}
SMALL = YearConfig(weeks=44)


@pytest.fixture(scope="module")
def years():
    """Two small worlds (2,000 applications a month, 44 weeks of 2024), each policy on both labels."""
    out = {}
    for name, drift in WORLDS.items():
        simulated = SimulatedYear(CreditStream(seed=2024, rows_per_month=2000, drift=drift), SMALL)
        out[name] = (simulated, simulated.compare(POLICIES, labels=(EARLY_LABEL, TARGET)))
    return out


def test_every_model_learns_only_labels_known_on_its_day(years):
    for simulated, year in years.values():
        retrains = year[year["retrain_started"]]
        assert len(retrains) > 0
        for row in retrains.itertuples():
            assert row.retrain_learns_to == month_label(newest_complete_month(row.date, row.label))
        for row in year.itertuples():
            assert row.learned_to <= month_label(newest_complete_month(row.date, row.label))
        # The 12-month label of 2024 is complete only for months of 2023 and before: before the drift.
        assert (year.loc[year["label"] == TARGET, "learned_to"] < "2024-01").all()
        # The retrospective look: every served loan's outcome is known then, and not a day before.
        served = simulated.loans(simulated.mondays[0], simulated.mondays[-1])
        simulated.require_known(served, simulated.review_as_of, TARGET)
        with pytest.raises(LabelFromTheFuture):
            simulated.require_known(served, simulated.review_as_of - pd.Timedelta(days=1), TARGET)


def test_the_monitor_reads_only_arrived_labels(years):
    simulated, _ = years["concept"]
    key = simulated.model(simulated.mondays[0], EARLY_LABEL)
    monday = simulated.mondays[10]
    simulated.performance(key, 10)      # computed without raising: every label in its window known on Monday
    arrived = simulated.known_rows(np.arange(len(simulated.history)), monday, EARLY_LABEL)
    assert (simulated.known[EARLY_LABEL][arrived] <= np.datetime64(monday)).all()
    with pytest.raises(LabelFromTheFuture):   # a loan applied for last week has no early label yet
        simulated.require_known(simulated.loans(monday - pd.Timedelta(weeks=1), monday), monday, EARLY_LABEL)


def test_which_alarm_sees_which_drift(years):
    summary = {name: year.groupby(["label", "policy"]).agg(auc=("auc", "mean"), n=("retrain_started", "sum"))
               for name, (_, year) in years.items()}
    down, concept = summary["downturn"], summary["concept"]
    # The input alarm fires on a downturn and never on pure concept drift (the inputs do not move) ...
    assert down.loc[(EARLY_LABEL, "drift"), "n"] >= 2 and concept.loc[(EARLY_LABEL, "drift"), "n"] == 0
    # ... the performance alarm fires on both, once drifted early labels have arrived (4 months after February).
    for name, (_, year) in years.items():
        started = year[(year["label"] == EARLY_LABEL) & (year["policy"] == "performance") & year["retrain_started"]]
        assert len(started) >= 1 and started["date"].min() >= pd.Timestamp("2024-06-01"), name
    assert concept.loc[(EARLY_LABEL, "performance"), "auc"] > concept.loc[(EARLY_LABEL, "none"), "auc"] + 0.01
    assert down.loc[(EARLY_LABEL, "drift"), "auc"] > down.loc[(EARLY_LABEL, "none"), "auc"] + 0.01
    # Retraining on the 12-month label cannot learn the drift within the year; on the early label it can, once
    # the first drifted month's early labels are complete (2024-07-01): from then on it gains more.
    for _, year in years.values():
        late = year[year["date"] >= pd.Timestamp("2024-07-01")].groupby(["label", "policy"])["auc"].mean()
        gain = {label: late[(label, "scheduled")] - late[(label, "none")] for label in (EARLY_LABEL, TARGET)}
        assert gain[EARLY_LABEL] > gain[TARGET]


def test_schedule_guard_and_deploy_delay(years):
    _, year = years["downturn"]
    scheduled = year[(year["policy"] == "scheduled") & (year["label"] == EARLY_LABEL)]
    assert list(scheduled.index[scheduled["retrain_started"]]) == list(range(SMALL.every_weeks, SMALL.weeks,
                                                                            SMALL.every_weeks))
    drift = year[(year["policy"] == "drift") & (year["label"] == EARLY_LABEL)]
    for week in drift.index[drift["retrain_started"]]:
        later = drift.loc[week + 1: week + SMALL.deploy_weeks - 1]
        assert not later["retrain_started"].any(), "a trigger while a retrain is pending is suppressed"
        if week + SMALL.deploy_weeks in drift.index:
            assert drift.loc[week + SMALL.deploy_weeks, "version"] == drift.loc[week, "version"] + 1
    assert drift["suppressed"].any()
    none = year[year["policy"] == "none"]
    assert none["version"].eq(1).all() and not none["retrain_started"].any()


def test_a_trigger_function_is_a_policy_and_bad_policies_are_refused(years):
    simulated, year = years["concept"]
    seen = []

    def either(week):
        seen.append(week)
        return ALARM in (week["input_alarm"], week["performance_alarm"])

    run = simulated.run(either, EARLY_LABEL)
    assert run["policy"].eq("either").all() and len(seen) == SMALL.weeks
    assert {"input_alarm", "performance_alarm", "week", "date"} <= set(seen[0])
    alone = year[(year["label"] == EARLY_LABEL) & (year["policy"] == "performance")]
    assert list(run.index[run["retrain_started"]]) == list(alone.index[alone["retrain_started"]])
    with pytest.raises(ValueError, match="policy"):
        simulated.run("weekly")
    with pytest.raises(ValueError, match="label"):
        YearConfig(label="defaulted")
    with pytest.raises(ValueError, match="early label"):
        YearConfig(label=EARLY_LABEL, monitor_label=TARGET)


def test_simulate_year_and_compare_policies_agree():
    stream = CreditStream(seed=5, rows_per_month=1000, drift=WORLDS["downturn"])
    config = YearConfig(weeks=8, label=EARLY_LABEL)
    one = simulate_year(stream, "scheduled", config)
    both = compare_policies(stream, config, policies=("none", "scheduled"))
    pd.testing.assert_frame_equal(one, both[both["policy"] == "scheduled"])
    assert one.attrs["review_as_of"] == both.attrs["review_as_of"]


@pytest.mark.parametrize("seed", range(5))
def test_alarm_state_is_cloudwatchs_m_of_n(seed):
    rng = np.random.default_rng(seed)
    values = pd.Series(rng.integers(0, 3, 30), index=pd.date_range("2024-01-01", periods=30, freq="7D"))
    rule = AlarmRule("x", threshold=0, period="7D", evaluation_periods=3, datapoints_to_alarm=2)
    expected = rule.evaluate(values)["state"].tolist()
    breaches = [bool(v > 0) for v in values]
    assert [alarm_state(breaches[:i + 1], 2, 3) for i in range(len(values))] == expected


def test_fast_scores_equal_the_pipelines():
    stream = CreditStream(seed=3, rows_per_month=2000, drift=Drift(covariate=1.5))
    model = train(known_as_of(stream.month(-20), "2026-01-01"), as_of="2026-01-01")
    frame = stream.months(range(0, 3))
    np.testing.assert_allclose(_score_all(model, frame, _design(frame)), model.predict_proba(frame[FEATURES])[:, 1],
                               rtol=0, atol=1e-12)


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
def test_canary_release_promotes_a_healthy_green_and_rolls_back_a_failing_one(green_status, outcome, tmp_path):
    from mlops_lab.retraining import canary_release
    from mlops_lab.router import read_admin_token, router_command
    from mlops_lab.servers import BackgroundServer

    blue, green = _Backend(200), _Backend(green_status)
    bodies = [b'{"dataframe_split": {"columns": ["age"], "data": [[30]]}}']
    try:
        token_file = tmp_path / "router.token"
        with BackgroundServer(router_command(blue.url, period_s=0.25, admin_token_file=token_file), name="router",
                              health_path="/ping") as router:
            result = canary_release(router.url, green.url, bodies, canary_size=0.3, bake_s=1.0, final_bake_s=0.5,
                                    alarms=({"metric": "error_rate", "threshold": 0.05, "min_requests": 2},),
                                    rate=80, timeout_s=20, admin_token=read_admin_token(token_file))
    finally:
        blue.close(), green.close()
    assert result["outcome"] == outcome
    assert result["green_weight"] == (1.0 if outcome == "promoted" else 0.0)
    assert result["client"]["requests"] > 0 and 0 < result["green_share"] < 1
    assert any("rolled back" in e["event"] for e in result["events"]) == (outcome == "rolled_back")


def test_chapter_12_checks_say_right_and_wrong(monkeypatch, capsys, batch, years):
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
    odd = snapshot(batch, "2024-08-01")
    odd.loc[odd.index[:3], "loan_term"] = 48
    odd.loc[odd.index[~odd["approved"]][:2], EARLY_LABEL] = 0
    ch12.check_flagged_columns({"loan_term", EARLY_LABEL}, odd)
    for wrong in ({"loan_term"}, {"loan_term", EARLY_LABEL, TARGET}):
        with pytest.raises(WrongAnswer):
            ch12.check_flagged_columns(wrong, odd)
    assert ch12.expected_delay(7, 0.5) == 14 and ch12.expected_delay(7, 0) == float("inf")
    simulated = {("concept drift" if name == "concept" else name): pair[0] for name, pair in years.items()}
    year = pd.concat([pair[1].assign(world="concept drift" if name == "concept" else name)
                      for name, pair in years.items()])
    ch12.check_trigger(ch12.either_alarm, simulated, year)
    ch12.check_trigger(lambda week: week["performance_alarm"] == "ALARM" or week["input_alarm"] == "ALARM",
                       simulated, year)
    for wrong in (lambda week: week["input_alarm"] == "ALARM", lambda week: True, lambda week: week["nope"], 42):
        with pytest.raises(WrongAnswer):
            ch12.check_trigger(wrong, simulated, year)
    ch12.check_trigger(..., simulated, year)      # not attempted: never raises
    out = capsys.readouterr().out
    assert out.count("correct") == 5 and "not attempted" in out
