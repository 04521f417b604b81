"""Checks for chapter 07: continuous training, gates and triggers.

Each build exercise's answer is *run*: a cron string through Prefect's own scheduler code, an event trigger
through the server's own matching (``EventTrigger.covers``), a gate rule on gate reports; the expected
answers come from those cases and from the chapter's own runs, never from a typed-in number.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pandas as pd

from ..checks import check_mapping, not_attempted, verdict

# ---- ex-07-1: the lender's schedule ------------------------------------------------------------------------
SCHEDULE_FROM = datetime(2025, 11, 15, 12, 0, tzinfo=timezone.utc)
SCHEDULE_TICKS = [datetime(2025, 12, 1, 6, 0, tzinfo=timezone.utc), datetime(2026, 1, 1, 6, 0, tzinfo=timezone.utc),
                  datetime(2026, 2, 1, 6, 0, tzinfo=timezone.utc), datetime(2026, 3, 1, 6, 0, tzinfo=timezone.utc)]


def next_ticks(cron: str, n: int = 4, start: datetime = SCHEDULE_FROM) -> list[datetime]:
    """The next ``n`` times a cron schedule (UTC) fires from ``start``, computed by Prefect's scheduler code."""
    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync

    schedule = CronSchedule(cron=cron, timezone="UTC")
    return [datetime.fromisoformat(str(t)).astimezone(timezone.utc)
            for t in run_coro_as_sync(schedule.get_dates(n=n, start=start))]


def check_cron(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-07-1", None, "replace the ... with a cron string, e.g. '30 2 * * 1' (02:30 on Mondays).")
    if not isinstance(answer, str):
        return verdict("ex-07-1", False, f"expected a cron string, got {type(answer).__name__}.")
    try:
        ticks = next_ticks(answer)
    except Exception as error:  # Prefect's validation message says what is wrong with the string
        return verdict("ex-07-1", False, f"Prefect does not accept {answer!r} as a cron schedule: {error}",
                       "five fields: minute hour day-of-month month day-of-week.")
    if ticks == SCHEDULE_TICKS:
        return verdict("ex-07-1", True, f"{answer!r} fires at 06:00 UTC on the 1st of each month: "
                                        f"{', '.join(f'{t:%Y-%m-%d %H:%M}' for t in ticks)}.")
    verdict("ex-07-1", False, f"from {SCHEDULE_FROM:%Y-%m-%d %H:%M} UTC it fires at "
                              f"{', '.join(f'{t:%Y-%m-%d %H:%M}' for t in ticks)}.",
            "minute 0, hour 6, day of month 1, every month, any day of the week.")


# ---- ex-07-2: an event trigger for chapter 12's drift alarm -------------------------------------------------
def _event(name: str, resource: dict) -> dict:
    return {"event": name, "resource": resource}


def _alert(state: str, alertname: str, severity: str) -> dict:
    """The event the webhook adapter emits for one Alertmanager alert."""
    return _event(f"alertmanager.alert.{state}", {"prefect.resource.id": f"alertmanager.alert.{alertname}",
                                                  "alertmanager.alertname": alertname,
                                                  "alertmanager.severity": severity})


TRIGGER_CASES = [   # (what happened, the event, should it start the pipeline?)
    ("a firing CreditInputDrift alert, severity page", _alert("firing", "CreditInputDrift", "page"), True),
    ("the same alert, severity warning", _alert("firing", "CreditInputDrift", "warning"), False),
    ("another alert (model AUC low), severity page", _alert("firing", "CreditModelAUCLow", "page"), False),
    ("CreditInputDrift resolved (Alertmanager's send_resolved)",
     _alert("resolved", "CreditInputDrift", "page"), False),
    ("new data committed (the other trigger's event)",
     _event("dvc.data.committed", {"prefect.resource.id": "dvc.repo.credit"}), False),
    ("a drift alert from another model's monitor, severity page", _alert("firing", "CreditInputDriftCards", "page"), False),
]


def trigger_covers(trigger, event: dict) -> bool:
    """Whether the Prefect server would count ``event`` for ``trigger`` (its own ``EventTrigger.covers``)."""
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    fields = ("expect", "match", "match_related", "after", "for_each", "posture", "threshold", "within")
    server_trigger = EventTrigger.model_validate(trigger.model_dump(include=set(fields)))
    received = ReceivedEvent(id=uuid.uuid4(), occurred=datetime.now(timezone.utc), payload={}, **event)
    return bool(server_trigger.covers(received))


def check_drift_trigger(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-07-2", None, "replace the ... with a DeploymentEventTrigger(...) and run the cell again.")
    from prefect.events.schemas.automations import EventTrigger

    if not isinstance(answer, EventTrigger):
        return verdict("ex-07-2", False, f"expected a DeploymentEventTrigger (or EventTrigger), got "
                                         f"{type(answer).__name__}.")
    if answer.posture != "Reactive" or answer.threshold != 1:
        return verdict("ex-07-2", False, f"this trigger is {answer.posture} with threshold {answer.threshold}: the "
                                         f"pipeline should start on each matching event.",
                       "leave posture and threshold at their defaults (Reactive, 1).")
    wrong = [(story, expected) for story, event, expected in TRIGGER_CASES if trigger_covers(answer, event) != expected]
    if not wrong:
        return verdict("ex-07-2", True, f"the trigger fires on the one case it should and ignores the other "
                                        f"{len(TRIGGER_CASES) - 1}: `expect` picks the event, `match` the resource "
                                        f"and its labels (the alert name and its severity).")
    verdict("ex-07-2", False, "; ".join(f"it {'misses' if expected else 'fires on'}: {story}" for story, expected in wrong) + ".",
            "expect={'alertmanager.alert.firing'}; match on 'prefect.resource.id' (the alert's resource) and on "
            "the label 'alertmanager.severity'.")


# ---- ex-07-3: a gate rule ---------------------------------------------------------------------------------
RELEASE_MARGIN = 0.005    # the risk team's "worth a release": half a point of AUC, at the gate's confidence


def release_rule(gate: dict) -> bool:
    """The reference rule: every check of the gate passed, and the AUC gain's lower bound beats the margin."""
    return bool(all(check["passed"] for check in gate["checks"]) and gate["lower_bound"] > RELEASE_MARGIN)


def gate_cases(runs: list[dict] | None = None) -> list[dict]:
    """Gate reports to judge: the chapter's own (``runs``) and made-up ones at the rule's edges."""
    def made_up(lower, checks_passed=True, cost_ok=True, champion="champion"):
        checks = [{"name": "auc_gain_lower_bound", "value": lower, "threshold": 0.0, "passed": lower > 0},
                  {"name": "cost_increase_lower_bound", "value": -0.01 if cost_ok else 0.02, "threshold": 0.0,
                   "passed": cost_ok},
                  {"name": "slice purpose=car", "value": 0.0, "threshold": -0.05, "passed": checks_passed}]
        return {"passed": all(c["passed"] for c in checks), "lower_bound": lower, "diff": lower + 0.01,
                "checks": checks, "champion": champion}
    return list(runs or []) + [made_up(0.012), made_up(0.003), made_up(0.0051), made_up(0.004999),
                               made_up(0.02, checks_passed=False), made_up(0.02, cost_ok=False), made_up(-0.01),
                               made_up(0.03, champion="incumbent policy")]


def check_gate_rule(answer, runs: list[dict] | None = None) -> None:
    if not_attempted(answer):
        return verdict("ex-07-3", None, "write the function promote(gate) and run the cell again.")
    if not callable(answer):
        return verdict("ex-07-3", False, f"expected a function promote(gate) -> bool, got {type(answer).__name__}.")
    wrong = []
    for case in gate_cases(runs):
        try:
            given = answer(case)
            if given is None:
                return verdict("ex-07-3", None, "promote returns None: write its body and run the cell again.")
        except Exception as error:
            return verdict("ex-07-3", False, f"promote raised {error!r} on a gate report with keys {sorted(case)}.",
                           "gate['checks'] is a list of dicts with 'name', 'value', 'threshold', 'passed'.")
        if not isinstance(given, (bool,)) and type(given).__name__ != "bool_":
            return verdict("ex-07-3", False, f"promote must return True or False, got {given!r}.")
        if bool(given) != release_rule(case):
            wrong.append(f"lower bound {case['lower_bound']:+.4f}, checks "
                         f"{'all passed' if all(c['passed'] for c in case['checks']) else 'not all passed'}: "
                         f"expected {release_rule(case)}")
    if not wrong:
        return verdict("ex-07-3", True, f"the rule decides all {len(gate_cases(runs))} reports as the risk team wants: "
                                        f"the gate's checks are necessary, and the margin asks for a gain worth a release.")
    verdict("ex-07-3", False, f"{len(wrong)} of {len(gate_cases(runs))} reports decided wrongly: " + "; ".join(wrong[:3]) + ".",
            f"every check passed AND gate['lower_bound'] > {RELEASE_MARGIN} (strictly).")


# ---- ex-07-4: where the bad batch stopped -----------------------------------------------------------------
def check_bad_batch(answer, tasks: pd.DataFrame) -> None:
    """``tasks``: :func:`mlops_lab.orchestration.task_table` of the refused run."""
    from ..dvc_project import LEVEL1_STAGES

    failed = tasks.loc[tasks["state"] == "Failed", "task"].tolist()
    every_task = ["extract", "export champion", *LEVEL1_STAGES, "store", "register"]
    expected = {"stopped_at": failed[0] if failed else None,
                "never_ran": set(every_task) - set(tasks["task"])}
    given = answer
    if isinstance(answer, dict) and isinstance(answer.get("never_ran"), (list, tuple, set)):
        given = {**answer, "never_ran": set(answer["never_ran"])}
    check_mapping("ex-07-4", given, expected,
                  why={"stopped_at": "the data contract failed on one export, so the stage exited non-zero and the "
                                     "flow stopped there, as `dvc repro` would.",
                       "never_ran": "everything downstream of the data gate: no model was trained on the bad batch, "
                                    "and none was registered."},
                  hint="look at the task table of the refused run: a task that never started has no row.")
