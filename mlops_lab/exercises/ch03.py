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


def cost_saving(repo: Path, old: str = "v1.0", new: str = "HEAD") -> float:
    """How much lower the committed cost per application is at ``new`` than at ``old`` (from git, via dvc.api)."""
    import dvc.api

    cost = {rev: dvc.api.metrics_show(repo=str(repo), rev=rev)["cost_per_application"] for rev in (old, new)}
    return cost[old] - cost[new]


def check_cost_saving(answer, repo: Path) -> None:
    if not_attempted(answer):
        return verdict("ex-03-2", None, "replace the ... with a number (the old cost minus the new one).")
    expected = cost_saving(repo)
    if isinstance(answer, (int, float)) and expected and abs(answer + expected) < 1e-6:
        return verdict("ex-03-2", False, "that is the right size with the wrong sign.",
                       "the old cost minus the new one: a saving is positive.")
    check_number("ex-03-2", answer, expected, tolerance=1e-6,
                 why="the committed metrics of any revision are one call away (dvc.api.metrics_show(rev=...)), "
                     "so a pipeline's history doubles as a record of what each change was worth.",
                 hint="dvc.api.metrics_show(repo=str(repo), rev='v1.0') and the same for 'HEAD'; subtract the "
                      "two cost_per_application values (or read `dvc metrics diff v1.0 HEAD`).")


def check_bad_test_size(answer) -> None:
    expected = {"failed_stage": "prepare", "model_still_in_workspace": True, "prepared_train_in_workspace": False}
    why = {"failed_stage": "prepare reads prepare.test_size and exits with a message naming it; DVC stops there.",
           "model_still_in_workspace": "DVC only removes the outputs of the stage it is about to run; train never ran.",
           "prepared_train_in_workspace": "DVC removed prepare's outputs before running it; they are still in the "
                                          "cache, and `dvc checkout` brings them back."}
    check_mapping("ex-03-3", answer, expected, why=why,
                  hint="run it, then look: `ls models data/prepared`; DVC deletes a stage's outputs just before it "
                       "runs the stage's command.")
