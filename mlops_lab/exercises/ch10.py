"""Checks for chapter 10: deployment strategies and guardrails."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..canary import assign_arms, sample_size_two_proportions, srm_check, two_proportion_ztest
from ..checks import check_mapping, check_number, not_attempted, verdict
from ..rollout import Alarm, RolloutPlan, simulate_rollout
from ..simulator import EARLY_LABEL, snapshot

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
    if not result["good_promoted"]:
        problems.append(f"a good release is rolled back after {result['good_rollout_s']:.1f} s: its steps are too "
                        f"small or too short to gather the evidence the alarm needs (inconclusive)")
    elif result["good_rollout_s"] > limit:
        problems.append(f"a good release takes {result['good_rollout_s']:.1f} s (limit {limit:g} s)")
    if not problems:
        return verdict("ex-10-1", True, f"a bad release costs at most {result['worst_errors']} errors over "
                                        f"{len(SEEDS)} simulated runs and a good one is live after "
                                        f"{result['good_rollout_s']:.1f} s.")
    return verdict("ex-10-1", False, "; ".join(problems) + ".",
                   "the first step's size bounds the errors (errors ~ step x rps x error rate x detection "
                   "time); the number of steps x bake time bounds the duration.")


def check_sample_size(answer, p_control: float = 0.12, p_treatment: float = 0.10) -> None:
    expected = sample_size_two_proportions(p_control, p_treatment)
    check_number("ex-10-2", answer, expected, tolerance=0.02, relative=True,
                 why=f"about {expected} loans per arm: a 2-point drop on a {p_control:.0%} rate is small, and the "
                     f"sample size grows with 1 / effect squared (and these are loans: applicants the arm "
                     f"approved, so the experiment needs more applicants than that).",
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


# ---- exercise 5: the A/B decision rule ----------------------------------------------------------------------
DECISIONS = ("invalid", "wait", "promote", "keep")
PLANNED = {"blue": 0.5, "green": 0.5}


def reference_decision(table: pd.DataFrame, alpha: float = 0.05) -> str:
    """The chapter's rule, on the lender's view of the experiment on one date (one row per applicant:
    ``arm``, ``approved``, ``early_delinquency``, the latter ``<NA>`` until known and for declined applicants).

    1. ``invalid``: the arms' sizes do not match the planned 50/50 split (SRM check, p < 0.001);
    2. ``wait``: some approved loan's early label is not known yet;
    3. ``promote``: green's early delinquency among its loans is lower (two-sided z-test, p < alpha) and its
       approval rate is not significantly lower (the guardrail);
    4. ``keep``: anything else.
    """
    counts = table["arm"].value_counts().reindex(list(PLANNED), fill_value=0)
    if srm_check(counts.to_dict(), PLANNED)["mismatch"]:
        return "invalid"
    loans = table[table["approved"]]
    if loans[EARLY_LABEL].isna().any():
        return "wait"
    approvals = table.groupby("arm")["approved"].sum()
    z_approval, p_approval = two_proportion_ztest(approvals["blue"], counts["blue"], approvals["green"],
                                                  counts["green"])
    bad = loans.groupby("arm")[EARLY_LABEL].sum()
    made = loans["arm"].value_counts()
    z_bad, p_bad = two_proportion_ztest(bad["blue"], made["blue"], bad["green"], made["green"])
    better = z_bad < 0 and p_bad < alpha
    harmful = z_approval < 0 and p_approval < alpha
    return "promote" if better and not harmful else "keep"


def decision_scenarios(experiment: pd.DataFrame, decided_on) -> dict[str, pd.DataFrame]:
    """Lender's views of the chapter's experiment (and of variations of it) that the rule must get right.

    ``experiment``: the world's record of the experiment (``lend`` output with an ``arm`` column);
    ``decided_on``: the first date every loan's early label is known.
    """
    decided_on = pd.Timestamp(decided_on)
    view = lambda world, date=decided_on: snapshot(world, date)  # noqa: E731  (the lender's table)
    rng = np.random.default_rng(10)
    green = (experiment["arm"] == "green").to_numpy()
    lost = green & (rng.random(len(experiment)) < 0.1)           # a tenth of green's applicants lost from the log
    swapped = experiment.assign(arm=np.where(green, "blue", "green"))
    champion_only = experiment.loc[~green]                     # every applicant decided by the same model
    a_a = champion_only.assign(arm=assign_arms(champion_only["application_id"], 0.5, salt="an A/A test"))
    # Green declines a third of the loans it made: fewer approvals, the same delinquency rate among the rest.
    cut = green & experiment["approved"].to_numpy() & (rng.random(len(experiment)) < 1 / 3)
    stingy = experiment.copy()
    stingy.loc[cut, "approved"] = False
    for column in (EARLY_LABEL, "default", "months_to_default"):
        stingy.loc[cut, column] = pd.NA
    for column in ("early_delinquency_known", "default_known", "default_date"):
        stingy.loc[cut, column] = pd.NaT
    return {
        "the chapter's experiment, on the decision date": view(experiment),
        "the same experiment, the day before": view(experiment, decided_on - pd.Timedelta(days=1)),
        "a tenth of green's applicants missing from the log": view(experiment.loc[~lost]),
        "the arms swapped (green is the worse model)": view(swapped),
        "one model in both arms (an A/A test)": view(a_a),
        "green declines a third of the loans it made": view(stingy),
    }


def check_decision(decide, experiment: pd.DataFrame, decided_on) -> None:
    if not callable(decide):
        return verdict("ex-10-5", None, "define decide(table) and run the cell again.")
    scenarios = decision_scenarios(experiment, decided_on)
    answers, wrong = {}, []
    for name, table in scenarios.items():
        expected = reference_decision(table)
        try:
            got = decide(table.copy())
        except Exception as error:  # the student's code: report, never crash the check
            return verdict("ex-10-5", False, f"decide raised {type(error).__name__}: {error} on '{name}'.",
                           "the table has one row per applicant: arm, approved, early_delinquency (<NA> when "
                           "not known yet, or declined).")
        if not_attempted(got):
            return verdict("ex-10-5", None, "decide returned nothing yet: return one of " + ", ".join(DECISIONS) + ".")
        answers[name] = got
        if got != expected:
            wrong.append(f"'{name}': expected {expected!r}, got {got!r}")
    if not wrong:
        return verdict("ex-10-5", True, f"your rule decides all {len(scenarios)} scenarios right: "
                       + "; ".join(f"{name}: {answer}" for name, answer in answers.items()) + ".")
    return verdict("ex-10-5", False, "; ".join(wrong) + ".",
                   "in order: the SRM check on the arms' counts (srm_check, planned 50/50); wait while any "
                   "approved loan has no early label; then the two z-tests (two_proportion_ztest): green's "
                   "delinquency among its loans lower with p < 0.05, and its approval rate not significantly "
                   "lower.")
