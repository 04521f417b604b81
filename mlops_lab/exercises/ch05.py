"""Checks for chapter 05: model and data lineage."""
from __future__ import annotations

from types import SimpleNamespace

from mlflow import MlflowClient

from ..checks import check_choice, check_mapping, not_attempted, verdict
from ..lineage import ASCENDANTS, batch_node, environment, query_lineage, versions_reached

ASSOCIATIONS = {
    "batch file -> data version": "ContributedTo",
    "data version -> training run": "ContributedTo",
    "lock file -> training run": "ContributedTo",
    "training run -> model file": "Produced",
    "model file -> model version": "DerivedFrom",
    "gate -> model version": "AssociatedWith",
}
ASSOCIATIONS_WHY = {
    "batch file -> data version": "the batch is one part of that version of data/raw.",
    "data version -> training run": "SageMaker's own example: training data contributed to the training job.",
    "lock file -> training run": "the environment is an input of the run, as a training job's container image is "
                                 "in SageMaker: it contributed to the run without being produced by it.",
    "training run -> model file": "the run generated the model file (SageMaker: a training job produced a model).",
    "model file -> model version": "the registered version is the model file packaged with a signature and "
                                   "requirements: the destination is a modification of the source.",
    "gate -> model version": "an approval step is connected to the version it judged, without producing it.",
}


def months_behind(graph, node: str) -> list[str]:
    """The monthly files upstream of ``node`` (a version, ``version:3``, or an alias, ``alias:champion``): the
    ones its pipeline read, in order."""
    upstream = query_lineage(graph, node, ASCENDANTS)
    return sorted(graph.nodes[n]["label"] for n in upstream if "relpath" in graph.nodes[n])


def check_rejected_months(answer, graph, version) -> None:
    """ex-05-1: the monthly files the pipeline read for ``version``, the challenger the gate rejected."""
    expected = months_behind(graph, f"version:{version}")
    if not_attempted(answer):
        return verdict("ex-05-1", None, "replace the ... with a list of months such as ['2024-01'].")
    if isinstance(answer, str) or not hasattr(answer, "__iter__"):
        return verdict("ex-05-1", False, f"expected a list of months, got {answer!r}.")
    got = sorted(str(m).removesuffix(".csv") for m in answer)
    if got == expected:
        return verdict("ex-05-1", True, f"version {version}'s pipeline read {', '.join(expected)}: the files of its "
                                        f"split (training months, then a validation and a test month), each a "
                                        f"version of the file as exported on the run's date.")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    verdict("ex-05-1", False, f"missing {missing or 'nothing'}, not used {extra or 'nothing'}.",
            f"query_lineage(graph, 'version:{version}', 'Ascendants') and keep the nodes with a 'relpath'.")


def check_batch_after_rollback(answer, repo, model_name: str, relpath: str) -> None:
    """ex-05-2: which versions the file ``relpath`` reached, and which version serves, after the rollback."""
    from ..lineage import build_lineage  # the graph as it is now, after the rollback

    graph = build_lineage(repo, model_name)
    reached = versions_reached(graph, batch_node(graph, relpath))
    month = relpath.removesuffix(".csv")
    serving = str(MlflowClient().get_registered_model(model_name).aliases["champion"])
    expected = {"versions": reached, "serving": serving}
    if isinstance(answer, dict) and "versions" in answer and not not_attempted(answer["versions"]):
        try:
            answer = {**answer, "versions": sorted((str(v) for v in answer["versions"]), key=int)}
        except (TypeError, ValueError):
            pass
    if isinstance(answer, dict) and "serving" in answer and not not_attempted(answer["serving"]):
        answer = {**answer, "serving": str(answer["serving"])}
    check_mapping("ex-05-2", answer, expected,
                  why={"versions": f"{month}'s file was read for version(s) {', '.join(reached)} only: every other "
                                   f"version's pipeline read other months.",
                       "serving": f"after the rollback @champion points at version {serving}"
                                  + (f", which {month} reached: the rollback escaped one corrupt file and "
                                     f"exposed the service to this one." if serving in reached else
                                     f", which {month} did not reach.")},
                  hint="rebuild the graph (build_lineage) after the rollback; versions_reached(graph, batch_node(...)).")


def _run_with(tags: dict):
    return SimpleNamespace(data=SimpleNamespace(tags=dict(tags)))


def expected_blockers(run, lock_file) -> list[str]:
    here = environment(lock_file)
    return sorted(key for key, value in here.items() if run.data.tags.get(key) != value)


def check_rebuild_blockers(answer, run, lock_file) -> None:
    """ex-05-5: the student's ``rebuild_blockers(run, lock_file)`` on the real run and on altered copies."""
    exercise = "ex-05-5"
    if not_attempted(answer):
        return verdict(exercise, None, "define rebuild_blockers(run, lock_file) and pass the function itself.")
    if not callable(answer):
        return verdict(exercise, False, f"expected a function, got {type(answer).__name__}.",
                       "pass the function itself: check_rebuild_blockers(rebuild_blockers, run, lock_file).")
    tags = dict(run.data.tags)
    cases = {
        "the serving version's run, on this machine": run,
        "a run trained with another lock file": _run_with({**tags, "env.lock_md5": "0" * 32}),
        "a run trained on a Mac with Apple's BLAS": _run_with({**tags, "env.platform": "Darwin arm64",
                                                               "env.blas": "accelerate 0 M1"}),
        "a run recorded before the environment was": _run_with({k: v for k, v in tags.items()
                                                                if not k.startswith("env.")}),
    }
    for name, case in cases.items():
        expected = expected_blockers(case, lock_file)
        try:
            got = answer(case, lock_file)
        except Exception as exc:  # a student's function may raise anything
            return verdict(exercise, False, f"for {name} it raised {type(exc).__name__}: {exc}",
                           "a missing tag is a difference too: run.data.tags.get(key).")
        if isinstance(got, str) or not hasattr(got, "__iter__"):
            return verdict(exercise, False, f"for {name} it returned {got!r}, not a list of names.")
        got = sorted(str(k) for k in got)
        if got != expected:
            return verdict(exercise, False, f"for {name} it returned {got}, expected {expected}.",
                           "compare every key of lineage.environment(lock_file) with run.data.tags.get(key).")
    verdict(exercise, True, "nothing blocks a rebuild here; another lock file, another platform or BLAS, or a run "
                            "that recorded no environment are each named, so you know what to check (or to "
                            "compare with a tolerance) before trusting a rebuilt model's hash.")


def check_associations(answer) -> None:
    check_mapping("ex-05-3", answer, ASSOCIATIONS, why=ASSOCIATIONS_WHY,
                  hint="the four types: ContributedTo, Produced, DerivedFrom, AssociatedWith.")


def changed_parameter(run_a, run_b) -> list[str]:
    """The parameter names whose values differ between two MLflow runs."""
    a, b = run_a.data.params, run_b.data.params
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_changed_parameter(answer, run_v2, run_v3) -> None:
    changed = changed_parameter(run_v2, run_v3)
    if len(changed) != 1:
        raise ValueError(f"expected exactly one changed parameter, found {changed}")
    check_choice("ex-05-4", answer, changed[0], choices=sorted(run_v2.data.params),
                 why=f"only {changed[0]} differs ({run_v2.data.params[changed[0]]} -> "
                     f"{run_v3.data.params[changed[0]]}); data and code are the same, so the gate's verdict is "
                     f"about that change alone.",
                 hint="compare run.data.params of the two runs (client.get_run(version.run_id)).")
