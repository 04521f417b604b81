"""Checks for chapter 10: deployment strategies and guardrails."""
from __future__ import annotations

from ..canary import sample_size_two_proportions
from ..checks import check_mapping, check_number, not_attempted, verdict
from ..router import Alarm, RolloutPlan, simulate_rollout

# The situation of exercise 1: a release that fails 40 % of its requests, 100 requests per second, and an
# error-rate alarm on half-second periods (2 breaching of the last 3).
BUDGET = {"error_budget": 30, "max_rollout_s": 20.0, "green_error_rate": 0.4, "rps": 100.0, "period_s": 0.5}
BUDGET_ALARM = Alarm("error_rate", 0.05, evaluation_periods=3, datapoints_to_alarm=2)
SEEDS = range(20)

STRATEGIES = {
    "try a new model on real traffic without any client ever seeing its answers": "shadow",
    "measure whether the new model approves better loans than the old one": "ab",
    "expose a release to a small share of traffic first, then all of it": "canary",
    "move traffic over in equal steps, watching each step": "linear",
    "a development environment: switch everything at once": "all_at_once",
}
WHY_STRATEGY = {
    "try a new model on real traffic without any client ever seeing its answers":
        "a shadow test copies requests to the new model and throws its answers away (after comparing them).",
    "measure whether the new model approves better loans than the old one":
        "an A/B test splits users between the two and compares a business metric with a planned sample size.",
    "expose a release to a small share of traffic first, then all of it":
        "a canary bakes a small share, then shifts the rest at once.",
    "move traffic over in equal steps, watching each step": "linear shifting bakes after each equal step.",
    "a development environment: switch everything at once":
        "all at once is simplest; guardrails still bake it and can roll it back.",
}


def rollout_meets_budget(step_size: float, bake_s: float) -> dict:
    """Simulate a linear rollout: worst client errors of a bad release, and a good release's duration."""
    plan = RolloutPlan("linear", step_size=step_size, bake_s=bake_s, final_bake_s=bake_s)
    bad = [simulate_rollout(plan, (BUDGET_ALARM,), green_error_rate=BUDGET["green_error_rate"],
                            rps=BUDGET["rps"], period_s=BUDGET["period_s"], seed=s) for s in SEEDS]
    good = simulate_rollout(plan, (BUDGET_ALARM,), green_error_rate=0.0, rps=BUDGET["rps"],
                            period_s=BUDGET["period_s"], seed=0)
    return {"worst_errors": max(r["client_errors"] for r in bad),
            "all_rolled_back": all(r["outcome"] == "rolled_back" for r in bad),
            "good_rollout_s": good["ended_s"], "good_promoted": good["outcome"] == "promoted"}


def check_rollout(answer) -> None:
    if not_attempted(answer) or (isinstance(answer, dict) and any(map(not_attempted, answer.values()))):
        return verdict("ex-10-1", None, "fill in step_size and bake_s and run the cell again.")
    try:
        step, bake = float(answer["step_size"]), float(answer["bake_s"])
        result = rollout_meets_budget(step, bake)
    except (KeyError, TypeError, ValueError) as error:
        return verdict("ex-10-1", False, f"that is not a valid plan: {error}",
                       "a dict with step_size (0 < s <= 1) and bake_s (seconds >= 0).")
    budget, limit = BUDGET["error_budget"], BUDGET["max_rollout_s"]
    problems = []
    if not result["all_rolled_back"] or result["worst_errors"] > budget:
        problems.append(f"a bad release costs clients up to {result['worst_errors']} errors "
                        f"(budget {budget})" + ("" if result["all_rolled_back"] else ", and is not always caught"))
    if not result["good_promoted"] or result["good_rollout_s"] > limit:
        problems.append(f"a good release takes {result['good_rollout_s']:.1f} s (limit {limit:g} s)")
    if not problems:
        return verdict("ex-10-1", True, f"a bad release costs at most {result['worst_errors']} errors over "
                                        f"{len(SEEDS)} simulated runs and a good one is live after "
                                        f"{result['good_rollout_s']:.1f} s.")
    return verdict("ex-10-1", False, "; ".join(problems) + ".",
                   "the first step's size bounds the errors (errors ~ step x rps x error rate x detection "
                   "time); the number of steps x bake time bounds the duration.")


def check_sample_size(answer, p_control: float = 0.75, p_treatment: float = 0.78) -> None:
    expected = sample_size_two_proportions(p_control, p_treatment)
    check_number("ex-10-2", answer, expected, tolerance=0.02, relative=True,
                 why=f"about {expected} applications per arm: a 3-point lift on a 75 % rate is small, and the "
                     f"sample size grows with 1 / effect squared.",
                 hint="n = (z_(1-alpha/2) sqrt(2 p(1-p)) + z_power sqrt(p1(1-p1) + p2(1-p2)))^2 / (p2 - p1)^2, "
                      "with p the average of p1 and p2; or sample_size_two_proportions.")


def check_strategies(answer) -> None:
    check_mapping("ex-10-3", answer, STRATEGIES, why=WHY_STRATEGY,
                  hint="the options are 'shadow', 'ab', 'canary', 'linear' and 'all_at_once'.")


def check_peeking(answer, result: dict) -> None:
    expected = float(result["peeking"])
    check_number("ex-10-4", answer, expected, tolerance=0.005,
                 why=f"{expected:.1%} of A/A tests declare a winner when you may stop at any of "
                     f"{result['looks']} looks: {expected / 0.05:.1f} times the 5 % you meant to accept.",
                 hint="the share of simulated experiments whose |z| crossed 1.96 at any look: result['peeking'].")
