"""Checks for chapter 05: model and data lineage."""
from __future__ import annotations

from mlflow import MlflowClient

from ..checks import check_choice, check_mapping, not_attempted, verdict
from ..lineage import ASCENDANTS, batch_node, query_lineage, versions_reached

ASSOCIATIONS = {
    "batch file -> data version": "ContributedTo",
    "data version -> training run": "ContributedTo",
    "training run -> model file": "Produced",
    "model file -> model version": "DerivedFrom",
    "gate -> model version": "AssociatedWith",
}
ASSOCIATIONS_WHY = {
    "batch file -> data version": "the batch is one part of that version of data/raw.",
    "data version -> training run": "SageMaker's own example: training data contributed to the training job.",
    "training run -> model file": "the run generated the model file (SageMaker: a training job produced a model).",
    "model file -> model version": "the registered version is the model file packaged with a signature and "
                                   "requirements: the destination is a modification of the source.",
    "gate -> model version": "an approval step is connected to the version it judged, without producing it.",
}


def months_behind(graph, alias: str) -> list[str]:
    """The batch months upstream of the version an alias points at, in order."""
    upstream = query_lineage(graph, f"alias:{alias}", ASCENDANTS)
    return sorted(graph.nodes[n]["label"] for n in upstream if "relpath" in graph.nodes[n])


def check_challenger_months(answer, graph) -> None:
    expected = months_behind(graph, "challenger")
    if not_attempted(answer):
        return verdict("ex-05-1", None, "replace the ... with a list of months such as ['2024-01'].")
    if isinstance(answer, str) or not hasattr(answer, "__iter__"):
        return verdict("ex-05-1", False, f"expected a list of months, got {answer!r}.")
    got = sorted(str(m).removesuffix(".csv") for m in answer)
    if got == expected:
        return verdict("ex-05-1", True, f"the challenger was trained on {', '.join(expected)}: every batch in the "
                                        f"data version its run recorded.")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    verdict("ex-05-1", False, f"missing {missing or 'nothing'}, not used {extra or 'nothing'}.",
            "query_lineage(graph, 'alias:challenger', 'Ascendants') and keep the nodes with a 'relpath'.")


def check_january_after_rollback(answer, repo, model_name: str) -> None:
    from ..lineage import build_lineage  # the graph as it is now, after the rollback

    graph = build_lineage(repo, model_name)
    reached = versions_reached(graph, batch_node(graph, "2024-01.csv"))
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
                  why={"versions": f"January is in every data version, so it reached versions {', '.join(reached)}.",
                       "serving": f"after the rollback @champion points at version {serving}, which January "
                                  f"also reached: rolling back to v1 removed April, not January."},
                  hint="rebuild the graph (build_lineage) after the rollback; versions_reached(graph, batch_node(...)).")


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
