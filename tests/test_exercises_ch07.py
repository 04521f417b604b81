"""The chapter 07 checks: right answers pass, wrong ones are caught (strict mode) with a reason, and an
unattempted exercise never raises. Each build check runs the answer: the cron string through Prefect's
scheduler code, the trigger through the server's event matching, the rule on gate reports."""
import pandas as pd
import pytest
from prefect.events import DeploymentEventTrigger

from mlops_lab.checks import WrongAnswer
from mlops_lab.dvc_project import LEVEL1_STAGES
from mlops_lab.exercises import ch07


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


def test_cron_check_runs_the_schedule(capsys):
    ch07.check_cron("0 6 1 * *")
    assert "correct" in capsys.readouterr().out
    assert ch07.next_ticks("0 6 1 * *")[0].isoformat() == "2025-12-01T06:00:00+00:00"
    with pytest.raises(WrongAnswer, match="2025-11-16 06:00"):
        ch07.check_cron("0 6 * * *")                 # every day
    with pytest.raises(WrongAnswer, match="2025-12-01 00:00"):
        ch07.check_cron("0 0 1 * *")                 # midnight
    with pytest.raises(WrongAnswer, match="does not accept"):
        ch07.check_cron("every month")
    with pytest.raises(WrongAnswer, match="cron string"):
        ch07.check_cron(6)


def test_trigger_check_uses_the_servers_own_matching(capsys):
    right = DeploymentEventTrigger(expect={"alertmanager.alert.firing"},
                                   match={"prefect.resource.id": "alertmanager.alert.CreditInputDrift",
                                          "alertmanager.severity": "page"})
    ch07.check_drift_trigger(right)
    assert "correct" in capsys.readouterr().out
    any_severity = DeploymentEventTrigger(expect={"alertmanager.alert.firing"},
                                          match={"prefect.resource.id": "alertmanager.alert.CreditInputDrift"})
    with pytest.raises(WrongAnswer, match="fires on: the same alert, severity warning"):
        ch07.check_drift_trigger(any_severity)
    prefix = DeploymentEventTrigger(expect={"alertmanager.alert.firing"},
                                    match={"prefect.resource.id": "alertmanager.alert.CreditInputDrift*",
                                           "alertmanager.severity": "page"})
    with pytest.raises(WrongAnswer, match="another model's monitor"):
        ch07.check_drift_trigger(prefix)
    any_event = DeploymentEventTrigger(match={"prefect.resource.id": "alertmanager.alert.CreditInputDrift",
                                              "alertmanager.severity": "page"})
    with pytest.raises(WrongAnswer, match="resolved"):
        ch07.check_drift_trigger(any_event)
    with pytest.raises(WrongAnswer, match="Reactive"):
        ch07.check_drift_trigger(right.model_copy(update={"posture": "Proactive"}))
    with pytest.raises(WrongAnswer, match="DeploymentEventTrigger"):
        ch07.check_drift_trigger({"expect": ["alertmanager.alert.firing"]})


def test_gate_rule_check_runs_the_rule_on_reports(capsys):
    ch07.check_gate_rule(lambda g: all(c["passed"] for c in g["checks"]) and g["lower_bound"] > 0.005)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="decided wrongly"):
        ch07.check_gate_rule(lambda g: g["passed"])                       # the gate alone: no margin
    with pytest.raises(WrongAnswer, match="decided wrongly"):
        ch07.check_gate_rule(lambda g: g["lower_bound"] > 0.005)           # ignores the other checks
    with pytest.raises(WrongAnswer, match="decided wrongly"):
        ch07.check_gate_rule(lambda g: all(c["passed"] for c in g["checks"]) and g["lower_bound"] >= 0.004)
    with pytest.raises(WrongAnswer, match="raised"):
        ch07.check_gate_rule(lambda g: g["verdict"])
    with pytest.raises(WrongAnswer, match="True or False"):
        ch07.check_gate_rule(lambda g: "yes")
    reports = ch07.gate_cases()
    assert {ch07.release_rule(r) for r in reports} == {True, False}, "the cases test both outcomes"


def refused_tasks() -> pd.DataFrame:
    return pd.DataFrame({"task": ["extract", "export champion", "validate_data"],
                         "state": ["Completed", "Completed", "Failed"], "attempts": [1, 1, 1], "seconds": [0.1] * 3})


def test_bad_batch_check_reads_the_task_table(capsys):
    never = {*LEVEL1_STAGES[1:], "store", "register"}
    ch07.check_bad_batch({"stopped_at": "validate_data", "never_ran": sorted(never)}, refused_tasks())
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="never_ran"):
        ch07.check_bad_batch({"stopped_at": "validate_data", "never_ran": never - {"register"}}, refused_tasks())
    with pytest.raises(WrongAnswer, match="stopped_at"):
        ch07.check_bad_batch({"stopped_at": "prepare", "never_ran": never}, refused_tasks())


def test_unattempted_exercises_never_raise(capsys):
    ch07.check_cron(...)
    ch07.check_drift_trigger(...)
    ch07.check_gate_rule(...)

    def promote(gate):
        ...
    ch07.check_gate_rule(promote)                                   # the student's empty function
    ch07.check_bad_batch({"stopped_at": ..., "never_ran": ...}, refused_tasks())
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 5 and "not quite" not in out
