"""Checks for chapter 13: the whole loop, and SageMaker."""
from __future__ import annotations

from .. import sagemaker as sm
from ..checks import check_number, not_attempted, verdict
from ..rollout import RolloutPlan

ROLLBACK_ALARMS = ["credit-risk-error-rate", "credit-risk-latency-p99"]
# ex-13-1: four steps of a quarter of the fleet, ten minutes each, the old fleet kept 15 minutes after.
LINEAR_PLAN = RolloutPlan("linear", step_size=0.25, bake_s=600, final_bake_s=600)
TERMINATION_WAIT_S = 900


def linear_rollout_request() -> dict:
    """The ``UpdateEndpoint`` request ex-13-1 asks for, built by the course kit."""
    request = sm.update_endpoint_request(LINEAR_PLAN, ROLLBACK_ALARMS)
    request["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TerminationWaitInSeconds"] = TERMINATION_WAIT_S
    return request


def _differences(answer, expected, path="") -> list[str]:
    """Where ``answer`` differs from ``expected``: each member path, with what was expected there."""
    if isinstance(expected, dict) and isinstance(answer, dict):
        found = []
        for key in expected:
            found += (_differences(answer[key], expected[key], f"{path}.{key}") if key in answer
                      else [f"{path}.{key} is missing"])
        return found
    if isinstance(expected, list) and isinstance(answer, list):
        if sorted(map(repr, answer)) == sorted(map(repr, expected)):
            return []
        return [f"{path} should be {expected!r}, not {answer!r}"]
    return [] if answer == expected else [f"{path.lstrip('.')} should be {expected!r}, not {answer!r}"]


def check_linear_rollout(request) -> None:
    """ex-13-1: botocore's validator first (what SageMaker would refuse), then what the request means."""
    exercise = "ex-13-1"
    if not_attempted(request) or (isinstance(request, dict) and any(not_attempted(v) for v in request.values())):
        return verdict(exercise, None, "fill in every ... of the request and run the cell again.")
    if not isinstance(request, dict):
        return verdict(exercise, False, f"a request is a dict of parameters, got {type(request).__name__}.")
    problems = sm.request_problems("sagemaker", "UpdateEndpoint", request)
    if problems:
        return verdict(exercise, False, "SageMaker would refuse this request (botocore's validator, offline):\n  - "
                       + "\n  - ".join(problems),
                       hint="DeploymentConfig holds BlueGreenUpdatePolicy (TrafficRoutingConfiguration, "
                            "TerminationWaitInSeconds) and AutoRollbackConfiguration (Alarms: [{'AlarmName': ...}]).")
    wrong = _differences(request, linear_rollout_request())
    if wrong:
        return verdict(exercise, False, "SageMaker would accept it, but it is not the rollout asked for:\n  - "
                       + "\n  - ".join(wrong),
                       hint="LINEAR with LinearStepSize {'Type': 'CAPACITY_PERCENT', 'Value': 25}; every bake is "
                            "WaitIntervalInSeconds; the old fleet's wait is TerminationWaitInSeconds.")
    verdict(exercise, True, "botocore accepts it, and SageMaker would move a quarter of the new fleet every ten "
                            "minutes while both alarms stay quiet, roll everything back if either fires, and keep "
                            "the old fleet 15 minutes after the last step.")


def cost_without_shadow_two_instances() -> float:
    table = sm.monthly_cost({"endpoint_instances": 2, "shadow_days_per_month": 0})
    return float(table.iloc[-1]["usd_per_month"])


def check_class_cost(answer) -> None:
    """ex-13-2: the monthly cost with two endpoint instances and no shadow test."""
    expected = cost_without_shadow_two_instances()
    check_number("ex-13-2", answer, expected, tolerance=0.01,
                 why=f"${expected:,.2f} a month: the second instance doubles the endpoint, by far the largest item, "
                     f"and dropping the week of shadow testing saves less than that adds.",
                 hint="sagemaker.monthly_cost({'endpoint_instances': 2, 'shadow_days_per_month': 0}); the total is "
                      "the last row's usd_per_month.")


ALIAS_MOVES = {"CI passes on a pull request": "none", "the pipeline's model gate refuses": "none",
               "the pipeline's model gate passes": "challenger", "the canary passes": "champion"}
ALIAS_WHY = {"CI passes on a pull request": "CI tests and delivers the pipeline's code; it trains nothing for production.",
             "the pipeline's model gate refuses": "a refused candidate gets no version and no alias.",
             "the pipeline's model gate passes": "the gate says better, not that it works in production: challenger.",
             "the canary passes": "only live traffic shows it works in production: champion moves then."}


def check_alias_moves(answer) -> None:
    """ex-13-3: which alias each event of the loop moves (none, challenger or champion)."""
    from ..checks import check_mapping, normalise

    if isinstance(answer, dict):
        odd = [v for v in answer.values() if not not_attempted(v) and normalise(v) not in ("none", "challenger",
                                                                                           "champion")]
        if odd:
            return verdict("ex-13-3", False, f"each answer is one of 'none', 'challenger', 'champion'; got {odd}.")
    check_mapping("ex-13-3", answer, ALIAS_MOVES, why=ALIAS_WHY,
                  hint="follow the loop in sections 2 to 5: what did aliases() show after each step?")
