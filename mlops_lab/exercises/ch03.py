"""Checks for chapter 03: pipelines as code. Expected answers come from the student's own repository."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..checks import check_mapping, check_number, not_attempted, verdict

CHANGES = {
    "train.C": "train",
    "featurize.log_scale": "featurize",
    "evaluate.threshold": "evaluate",
    "a new month in data/raw": "prepare",
}


def downstream(repo: Path, stage: str) -> set[str]:
    """``stage`` and every stage that depends, directly or not, on one of its outputs (read from dvc.yaml)."""
    stages = yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"]
    outs = {name: {str(next(iter(o))) if isinstance(o, dict) else str(o)
                   for o in spec.get("outs", []) + spec.get("metrics", []) + spec.get("plots", [])}
            for name, spec in stages.items()}
    found, frontier = {stage}, [stage]
    while frontier:
        produced = outs[frontier.pop()]
        for name, spec in stages.items():
            if name not in found and any(d in produced or any(d.startswith(p + "/") for p in produced)
                                         for d in spec.get("deps", [])):
                found.add(name)
                frontier.append(name)
    return found


def check_reruns(answer, repo: Path) -> None:
    if not_attempted(answer) or (isinstance(answer, dict) and all(map(not_attempted, answer.values()))):
        return verdict("ex-03-1", None, "fill in a set of stage names for every change and run the cell again.")
    if not isinstance(answer, dict):
        return verdict("ex-03-1", False, f"expected a dict, got {type(answer).__name__}.")
    expected = {change: downstream(repo, stage) for change, stage in CHANGES.items()}
    given = {k: set(v) if isinstance(v, (set, list, tuple)) else v for k, v in answer.items()}
    why = {change: f"{stage} reads it; " + (f"{', '.join(sorted(expected[change] - {stage}))} read(s) what "
                                            f"{stage} writes, directly or not." if expected[change] != {stage}
                                            else "no stage reads what it writes.")
           for change, stage in CHANGES.items()}
    check_mapping("ex-03-1", given, expected, why=why,
                  hint="a change reruns the stage that reads it, then every stage downstream of it in `dvc dag`; "
                       "upstream stages are skipped.")


def recall_at(repo: Path, threshold: float) -> float:
    """The recall of the committed model on the pipeline's test set when declining at ``threshold``."""
    import joblib
    import pandas as pd

    test = pd.read_csv(Path(repo) / "data" / "prepared" / "test.csv")
    p = joblib.load(Path(repo) / "models" / "model.joblib").predict_proba(test)[:, 1]
    defaults = test["default"] == 1
    return float(((p >= threshold) & defaults).sum() / defaults.sum())


def check_recall(answer, repo: Path, threshold: float = 0.2) -> None:
    if not_attempted(answer):
        return verdict("ex-03-2", None, "replace the ... with the recall, a number between 0 and 1.")
    check_number("ex-03-2", answer, recall_at(repo, threshold), tolerance=1e-5,
                 why=f"at a threshold of {threshold} the model declines that share of the applicants who went on "
                     "to default; a lower threshold catches more of them, at the price of declining more good payers.",
                 hint=f"run `dvc exp run --set-param evaluate.threshold={threshold}` and read recall from "
                      "metrics.json (only the evaluate stage reruns).")


def check_bad_test_size(answer) -> None:
    expected = {"failed_stage": "prepare", "model_still_in_workspace": True, "prepared_train_in_workspace": False}
    why = {"failed_stage": "prepare reads prepare.test_size and exits with a message naming it; DVC stops there.",
           "model_still_in_workspace": "DVC only removes the outputs of the stage it is about to run; train never ran.",
           "prepared_train_in_workspace": "DVC removed prepare's outputs before running it; they are still in the "
                                          "cache, and `dvc checkout` brings them back."}
    check_mapping("ex-03-3", answer, expected, why=why,
                  hint="run it, then look: `ls models data/prepared`; DVC deletes a stage's outputs just before it "
                       "runs the stage's command.")
