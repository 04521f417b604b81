"""Lineage: MLflow runs and registry joined to a real git + DVC credit project, queried both ways."""
import json

import mlflow
import networkx as nx
import pytest
import yaml

from mlops_lab import dvc_project, lineage, registry
from mlops_lab.chapter import Chapter
from mlops_lab.shell import sh
from mlops_lab.simulator import CreditStream

LOCK = {"schema": "2.0", "stages": {
    "prepare": {"cmd": "python src/prepare.py",
                "deps": [{"path": "data/raw", "md5": "aaaa1111.dir"}, {"path": "src/prepare.py", "md5": "p1"}],
                "params": {"params.yaml": {"prepare": {"window_months": 0}}},
                "outs": [{"path": "data/prepared/train.csv", "md5": "t1"}]},
    "train": {"cmd": "python src/train.py", "deps": [{"path": "src/train.py", "md5": "s1"}],
              "params": {"params.yaml": {"train": {"C": 1.0}}},
              "outs": [{"path": "models/model.joblib", "md5": "m1"}]}}}


def test_lock_hashes_pick_data_code_params_and_model():
    hashes = lineage.lock_hashes(LOCK)
    assert hashes["data"] == "aaaa1111" and hashes["model"] == "m1"
    changed_code = json.loads(json.dumps(LOCK))
    changed_code["stages"]["train"]["deps"][0]["md5"] = "s2"
    changed_params = json.loads(json.dumps(LOCK))
    changed_params["stages"]["train"]["params"]["params.yaml"]["train"]["C"] = 0.1
    assert lineage.lock_hashes(changed_code)["code"] != hashes["code"]
    assert lineage.lock_hashes(changed_code)["params"] == hashes["params"]
    assert lineage.lock_hashes(changed_params)["params"] != hashes["params"]


def test_flat_params_names_nested_values():
    assert lineage.flat_params({"train": {"C": 1.0, "class_weight": None}, "featurize": {"drop": ["a"]}}) == {
        "train.C": "1.0", "train.class_weight": "null", "featurize.drop": '["a"]'}


def test_dir_manifest_reads_dvc_cache_and_explains_a_miss(tmp_path):
    folder = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab"
    folder.mkdir(parents=True)
    (folder / "cdef.dir").write_text('[{"md5": "x", "relpath": "2024-01.csv"}]')
    assert lineage.dir_manifest(tmp_path, "abcdef.dir") == [{"md5": "x", "relpath": "2024-01.csv"}]
    with pytest.raises(FileNotFoundError, match="dvc fetch"):
        lineage.dir_manifest(tmp_path, "ffff")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny credit project with three registered versions: months 0-1, then +month 2, then a param change."""
    folder = tmp_path_factory.mktemp("lineage")
    chapter = Chapter("99_lineage", folder, 1, f"sqlite:///{folder / 'mlflow.db'}")
    names = registry.start_tracking(chapter, "lineage-tests", "credit-lineage")
    stream = CreditStream(seed=5, rows_per_month=400)
    repo = dvc_project.build_credit_project(folder / "credit", stream, months=(0, 1))
    holdout = stream.month(1, replicate=1)
    records = [lineage.record_training_run(repo, names.model, "first")]
    registry.promote_if_better(names.model, records[-1].version, holdout)
    dvc_project.retrain(repo, stream, 2)
    records.append(lineage.record_training_run(repo, names.model, "second"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["C"] = 0.05
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro -q", cwd=repo, echo=False)
    dvc_project.commit(repo, "Stronger regularisation")
    records.append(lineage.record_training_run(repo, names.model, "third"))
    registry.set_alias(names.model, "champion", records[1].version)
    yield repo, names.model, records
    mlflow.set_tracking_uri(None)


def test_record_training_run_links_mlflow_to_git_and_dvc(project):
    repo, model, records = project
    client = mlflow.MlflowClient()
    run = client.get_run(records[1].run_id)
    assert run.data.tags["git.commit"] == records[1].commit == lineage.git(repo, "rev-parse", "model-v2")
    assert run.data.tags["dvc.data_raw.md5"] == records[1].data_md5 != records[0].data_md5
    assert run.inputs.dataset_inputs[0].dataset.digest == records[1].data_md5
    assert run.data.params["train.C"] == "1.0" and client.get_run(records[2].run_id).data.params["train.C"] == "0.05"
    assert records[2].data_md5 == records[1].data_md5 and records[2].model_md5 != records[1].model_md5
    assert client.get_model_version(model, "2").tags["dvc.model.md5"] == records[1].model_md5


def test_record_training_run_refuses_uncommitted_results(project, tmp_path):
    repo, model, _ = project
    (repo / "scratch.txt").write_text("not committed")
    try:
        with pytest.raises(RuntimeError, match="commit the pipeline"):
            lineage.record_training_run(repo, model, "dirty")
    finally:
        (repo / "scratch.txt").unlink()


def test_graph_uses_sagemaker_vocabulary_and_answers_both_questions(project):
    repo, model, records = project
    graph = lineage.build_lineage(repo, model)
    assert nx.is_directed_acyclic_graph(graph)
    associations = {d["association"] for _, _, d in graph.edges(data=True)}
    assert associations == {"ContributedTo", "Produced", "DerivedFrom", "AssociatedWith"}
    assert {d["kind"] for _, d in graph.nodes(data=True)} == {"artifact", "action", "context"}

    # forward: the month-2 batch reached versions 2 and 3 only; the first month reached all three
    assert lineage.versions_reached(graph, lineage.batch_node(graph, "2024-03.csv")) == ["2", "3"]
    assert lineage.versions_reached(graph, lineage.batch_node(graph, "2024-01.csv")) == ["1", "2", "3"]
    # backward: the champion (version 2) came from three batches, one data version, one params version
    upstream = lineage.query_lineage(graph, "alias:champion", lineage.ASCENDANTS)
    assert [graph.nodes[n]["label"] for n in upstream if "relpath" in graph.nodes[n]] == ["2024-01", "2024-02", "2024-03"]
    assert lineage.query_lineage(graph, "alias:champion", "Ascendants", "ModelPackage") == ["version:2"]
    assert f"data:{records[1].data_md5[:8]}" in upstream and f"model:{records[1].model_md5[:8]}" in upstream
    # versions 2 and 3 share data and code, not parameters
    v2, v3 = (set(lineage.query_lineage(graph, f"version:{v}", "Ascendants")) for v in ("2", "3"))
    shared_types = {graph.nodes[n]["type"] for n in v2 & v3}
    assert {"DataSet", "Code"} <= shared_types and "Parameters" not in shared_types


def test_query_lineage_rejects_unknown_nodes_and_directions(project):
    repo, model, _ = project
    graph = lineage.build_lineage(repo, model)
    with pytest.raises(KeyError, match="not in the lineage graph"):
        lineage.query_lineage(graph, "version:99")
    with pytest.raises(ValueError, match="direction"):
        lineage.query_lineage(graph, "version:1", "Upstream")


def test_draw_lineage_highlights_nodes(project):
    repo, model, _ = project
    graph = lineage.build_lineage(repo, model)
    fig = lineage.draw_lineage(graph, highlight=["version:2"], title="test")
    texts = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert texts["v2"] == "#d62728" and texts["v1"] == "black"
    positions = lineage.layered_positions(graph)
    assert positions["version:1"][1] > positions["version:3"][1], "oldest version on top"
