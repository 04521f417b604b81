"""Checks for chapter 04: experiment tracking and the model registry."""
from __future__ import annotations

import pandas as pd

from ..checks import check_choice, check_mapping, check_number, not_attempted, verdict
from ..registry import CHAMPION, AliasNotFound, GateDecision, get_version

SAGEMAKER = {
    "experiment": "SageMaker Experiments (or a SageMaker managed MLflow tracking server)",
    "registered model": "model package group",
    "model version": "model package (a version in the group)",
    "the champion alias": "approval status Approved",
    "a challenger rejected by the gate": "approval status Rejected",
}
SAGEMAKER_WHY = {
    "experiment": "both group the runs (trials) of one modelling question; SageMaker now also offers managed "
                  "MLflow tracking servers, so the code of this chapter runs there unchanged.",
    "registered model": "a model package group holds every version of one model, as a registered model does.",
    "model version": "each registration adds a numbered model package, like a new MLflow model version.",
    "the champion alias": "deployment pipelines deploy the latest Approved package, as ours loads @champion.",
    "a challenger rejected by the gate": "a package that failed its evaluation is marked Rejected and never "
                                         "deploys; the champion keeps serving.",
}


def best_run(runs: pd.DataFrame, window_months: int, metric: str = "metrics.val_auc") -> pd.Series:
    """The run with the highest ``metric`` among the sweep runs that trained on ``window_months`` months."""
    chosen = runs[runs["params.window_months"].astype(int) == int(window_months)]
    return chosen.sort_values(metric, ascending=False).iloc[0]


def check_best_short_window(answer, runs: pd.DataFrame) -> None:
    best = best_run(runs, 1)
    expected = float(best["params.C"])
    choices = sorted({float(c) for c in runs["params.C"]})
    if not_attempted(answer):
        return verdict("ex-04-1", None, "replace the ... with the C of that run (a number).")
    try:
        answer = float(answer)
    except (TypeError, ValueError):
        return verdict("ex-04-1", False, f"expected a number such as {choices[0]}, got {answer!r}.")
    check_choice("ex-04-1", answer, expected, choices=choices,
                 why=f"among the 1-month runs, C={expected:g} has the highest validation AUC "
                     f"({best['metrics.val_auc']:.4f}).",
                 hint="mlflow.search_runs(filter_string=\"params.window_months = '1'\", "
                      "order_by=['metrics.val_auc DESC']): params are strings, so quote the 1.")


def check_largest_margin(answer, decision: GateDecision) -> None:
    if decision.champion_score is None:
        raise ValueError("the decision compared with no champion: pass the gate decision for version 2")
    expected = decision.challenger_score - decision.champion_score
    check_number("ex-04-2", answer, expected, tolerance=1e-4,
                 why=f"the challenger beat the champion by {expected:.4f} AUC on the holdout; any "
                     f"min_improvement up to that still promotes it.",
                 hint="the decision object holds both scores: challenger_score - champion_score.")


def check_serving_version(answer, model_name: str) -> None:
    exercise = "ex-04-3"
    if not_attempted(answer):
        return verdict(exercise, None, "define serving_version(name) and pass the function itself.")
    if not callable(answer):
        return verdict(exercise, False, f"expected a function, got {type(answer).__name__}.",
                       "pass the function itself: check_serving_version(serving_version, MODEL).")
    expected = str(get_version(model_name, CHAMPION).version)
    for name, want in ((model_name, expected), ("no-such-model-ex-04-3", None)):
        try:
            got = answer(name)
        except Exception as exc:  # a student's function may raise anything
            return verdict(exercise, False, f"serving_version({name!r}) raised {type(exc).__name__}: {exc}",
                           "catch AliasNotFound (from mlops_lab.registry) and return None.")
        got = None if got is None else str(got)
        if got != want:
            return verdict(exercise, False, f"serving_version({name!r}) returned {got!r}, expected {want!r}.",
                           "registry.get_version(name, 'champion').version, or None on AliasNotFound.")
    verdict(exercise, True, f"it returns {expected!r} for {model_name!r} and None for a model with no "
                            f"champion, so a deployment can tell 'nothing to serve' from a real error.")


def check_sagemaker_mapping(answer) -> None:
    check_mapping("ex-04-4", answer, SAGEMAKER, why=SAGEMAKER_WHY,
                  hint="copy the exact strings from the list of options in the exercise.")


__all__ = ["AliasNotFound", "SAGEMAKER", "best_run", "check_best_short_window", "check_largest_margin",
           "check_serving_version", "check_sagemaker_mapping"]
