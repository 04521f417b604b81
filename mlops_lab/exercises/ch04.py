"""Checks for chapter 04: experiment tracking and the model registry."""
from __future__ import annotations

import pandas as pd

from ..checks import check_choice, check_mapping, check_number, not_attempted, verdict
from ..registry import CHAMPION, AliasNotFound, GateDecision, get_version
from ..simulator import (FEATURES, TARGET, CreditStream, LabelFromTheFuture, check_known, known_as_of, month_label,
                         newest_complete_month)

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
    expected = decision.gain_lower_bound
    gain = decision.challenger_score - decision.champion_score
    check_number("ex-04-2", answer, expected, tolerance=1e-4,
                 why=f"the challenger beat the champion by {gain:.4f} AUC on the holdout, and the gate requires the "
                     f"gain's 95 % lower bound, {expected:.4f}, to exceed min_improvement: any min_improvement "
                     f"below that still promotes it. The raw gain is not the answer: part of it is noise.",
                 hint="the decision object holds the bound the gate compared: decision.gain_lower_bound.")


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


# Dates the gate-holdout check tries: the first of a month, mid-month, the last day of a month, a year later.
HOLDOUT_DATES = ("2024-04-01", "2024-04-17", "2024-12-31", "2025-07-01")
_COMPARED = ["application_id", "application_date", *FEATURES, TARGET]


def expected_gate_holdout(stream: CreditStream, as_of) -> pd.DataFrame:
    """The approved loans of replicate 1 of the newest complete month on ``as_of``, outcomes known then."""
    return known_as_of(stream.month(newest_complete_month(as_of), replicate=1), as_of)


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[_COMPARED].sort_values("application_id").reset_index(drop=True)


def check_gate_holdout(answer, stream: CreditStream) -> None:
    exercise = "ex-04-5"
    if not_attempted(answer):
        return verdict(exercise, None, "define gate_holdout(stream, as_of) and pass the function itself.")
    if not callable(answer):
        return verdict(exercise, False, f"expected a function, got {type(answer).__name__}.",
                       "pass the function itself: check_gate_holdout(gate_holdout, stream).")
    for as_of in HOLDOUT_DATES:
        newest = newest_complete_month(as_of)
        try:
            got = answer(stream, as_of)
        except Exception as exc:  # a student's function may raise anything
            return verdict(exercise, False, f"gate_holdout(stream, {as_of!r}) raised {type(exc).__name__}: {exc}",
                           "newest_complete_month(as_of) gives the month; known_as_of(batch, as_of) its labelled rows.")
        if not isinstance(got, pd.DataFrame) or not set(_COMPARED) <= set(got.columns):
            return verdict(exercise, False, f"gate_holdout(stream, {as_of!r}) returned {type(got).__name__}, not a "
                                            f"batch of loans with their features and outcome.",
                           "return known_as_of(stream.month(...), as_of): a DataFrame.")
        try:
            check_known(got, as_of)
        except LabelFromTheFuture as error:
            return verdict(exercise, False, f"for {as_of}: {error}",
                           f"on {as_of} the newest month with every outcome known is {month_label(newest)} "
                           f"(newest_complete_month); keep only its known rows with known_as_of.")
        expected = expected_gate_holdout(stream, as_of)
        if _rows(got).equals(_rows(expected)):
            continue
        months = sorted(month_label(int(m)) for m in got["month"].unique())
        if months != [month_label(newest)]:
            return verdict(exercise, False, f"for {as_of} it holds applications from {', '.join(months) or 'no month'};"
                                            f" the newest complete month then is {month_label(newest)}.",
                           "newest_complete_month(as_of): a month whose outcomes are partly in is a biased sample.")
        training = known_as_of(stream.month(newest), as_of)
        if _rows(got).equals(_rows(training)):
            return verdict(exercise, False, f"for {as_of} it returns replicate 0 of {month_label(newest)}: the very "
                                            f"loans the model trained on, so the gate would flatter it.",
                           "draw an independent sample of the same month: stream.month(month, replicate=1).")
        return verdict(exercise, False, f"for {as_of} it returns {len(got)} rows; the holdout has {len(expected)} "
                                        f"(every approved loan of replicate 1 of {month_label(newest)}).",
                       "known_as_of(stream.month(month, replicate=1), as_of), without further filtering.")
    verdict(exercise, True, f"on each of {', '.join(HOLDOUT_DATES)} it returns the approved loans of an independent "
                            f"sample of the newest complete month, every outcome known on that date: a holdout the "
                            f"gate accepts and no model trained on.")


__all__ = ["AliasNotFound", "SAGEMAKER", "best_run", "check_best_short_window", "check_gate_holdout",
           "check_largest_margin", "check_serving_version", "check_sagemaker_mapping", "expected_gate_holdout"]
