"""Checks for chapter 03: pipelines as code. Expected answers come from the student's own repository."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..checks import check_mapping, check_number, not_attempted, verdict

CHANGES = {
    "train.C": "train",
    "featurize.log_scale": "featurize",
    "evaluate.threshold": "evaluate",
    "prepare.label": "prepare",
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


def check_clock_ahead(answer) -> None:
    expected = {"failed_stage": "prepare", "model_still_in_workspace": True, "prepared_train_in_workspace": False}
    why = {"failed_stage": "prepare finds approved loans of a month complete on the new as_of without their label "
                           "(the export is older than as_of) and exits with a message saying so; DVC stops there.",
           "model_still_in_workspace": "DVC only removes the outputs of the stage it is about to run; train never ran.",
           "prepared_train_in_workspace": "DVC removed prepare's outputs before running it; they are still in the "
                                          "cache, and `dvc checkout` brings them back."}
    check_mapping("ex-03-3", answer, expected, why=why,
                  hint="run it, then look: `ls models data/prepared`; DVC deletes a stage's outputs just before it "
                       "runs the stage's command.")


def approval_rate(repo: Path) -> float:
    """The share of the test month's applicants (from data/raw) the committed model approves at the threshold."""
    import json

    import joblib
    import pandas as pd

    repo = Path(repo)
    threshold = yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["threshold"]
    month = json.loads((repo / "data" / "prepared" / "split.json").read_text())["test_month"]
    applicants = pd.read_csv(repo / "data" / "raw" / f"{month}.csv")
    p = joblib.load(repo / "models" / "model.joblib").predict_proba(applicants)[:, 1]
    return float((p < threshold).mean())


def _names(entries) -> set[str]:
    """Paths or parameter names of a dvc.yaml list: plain strings, ``{path: options}`` or ``{file: [names]}``."""
    names = set()
    for entry in entries or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                names |= {str(v) for v in value} if isinstance(value, list) else {str(key)}
        else:
            names.add(str(entry))
    return names


def check_approval_stage(repo: Path) -> None:
    repo = Path(repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    if "approval" not in stages:
        return verdict("ex-03-4", None, "dvc.yaml has no stage named 'approval' yet: add it (dvc stage add -n "
                                        "approval ...) and run dvc repro.")
    spec = stages["approval"]
    deps, params = _names(spec.get("deps")), _names(spec.get("params"))
    metrics = spec.get("metrics") or []
    metric = [m for m in metrics if (next(iter(m)) if isinstance(m, dict) else m) == "approval.json"]
    problems = []
    if "models/model.joblib" not in deps:
        problems.append("the stage reads the model, so models/model.joblib must be a dependency")
    if not any(d == "data/raw" or d.startswith("data/raw/") for d in deps):
        problems.append("the stage reads the test month's applicants from data/raw: declare it as a dependency")
    if not params & {"evaluate.threshold", "evaluate"}:
        problems.append("the stage reads evaluate.threshold: declare it under params")
    if not metric or not (isinstance(metric[0], dict) and metric[0]["approval.json"].get("cache") is False):
        problems.append("approval.json must be a metric that git keeps (metrics: - approval.json: {cache: false}, "
                        "which `dvc stage add -M approval.json` writes)")
    lock = yaml.safe_load((repo / "dvc.lock").read_text()) if (repo / "dvc.lock").exists() else {}
    if "approval" not in (lock or {}).get("stages", {}):
        problems.append("dvc.lock has no entry for approval: run `dvc repro` (or `dvc repro approval`)")
    if problems:
        return verdict("ex-03-4", False, "; ".join(problems) + ".",
                       "dvc stage add -n approval -d src/approval.py -d models/model.joblib -d data/raw "
                       "-p evaluate.threshold -M approval.json python src/approval.py")
    try:
        given = json.loads((repo / "approval.json").read_text())["approval_rate"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return verdict("ex-03-4", False, f"approval.json should hold {{\"approval_rate\": ...}}; reading it failed: "
                                         f"{type(error).__name__}: {error}")
    expected = approval_rate(repo)
    if not isinstance(given, (int, float)) or abs(given - expected) > 1e-6:
        return verdict("ex-03-4", False, f"approval_rate is {given!r}; the model approves {expected:.6f} of the "
                                         "test month's applicants at the threshold.",
                       "read every applicant of data/raw/<test month>.csv (declined ones too), score them with the "
                       "model, and count p < threshold (a decline is p >= threshold).")
    return verdict("ex-03-4", True, f"the stage declares what it reads, and the model approves {expected:.1%} of the "
                                    "test month's applicants: DVC will rerun it whenever the model, the data or the "
                                    "threshold changes, and `dvc metrics show` lists it beside the others.")
