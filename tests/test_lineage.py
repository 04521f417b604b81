"""Lineage: MLflow runs and registry joined to a real git + DVC credit project, queried both ways."""
import hashlib
import json
import platform
from pathlib import Path

import mlflow
import networkx as nx
import pytest
import yaml

from mlops_lab import dvc_project, lineage, registry
from mlops_lab.chapter import Chapter
from mlops_lab.shell import sh
from mlops_lab.simulator import CreditStream, known_as_of, newest_complete_month

ROOT = Path(__file__).resolve().parents[1]
FIRST, SECOND = "2024-04-01", "2024-05-01"   # the build, then a month later: the window slides by a month

LOCK = {"schema": "2.0", "stages": {
    "prepare": {"cmd": "python src/prepare.py",
                "deps": [{"path": "data/raw", "md5": "aaaa1111.dir"}, {"path": "src/prepare.py", "md5": "p1"}],
                "params": {"params.yaml": {"prepare": {"window_months": 0}}},
                "outs": [{"path": "data/prepared/train.csv", "md5": "t1"}]},
    "train": {"cmd": "python src/train.py", "deps": [{"path": "src/train.py", "md5": "s1"},
                                                     {"path": "requirements.txt", "md5": "r1"}],
              "params": {"params.yaml": {"train": {"C": 1.0}}},
              "outs": [{"path": "models/model.joblib", "md5": "m1"}]}}}


def test_lock_hashes_pick_data_code_params_environment_and_model():
    hashes = lineage.lock_hashes(LOCK)
    assert hashes["data"] == "aaaa1111" and hashes["model"] == "m1" and hashes["environment"] == "r1"
    changed_code = json.loads(json.dumps(LOCK))
    changed_code["stages"]["train"]["deps"][0]["md5"] = "s2"
    changed_params = json.loads(json.dumps(LOCK))
    changed_params["stages"]["train"]["params"]["params.yaml"]["train"]["C"] = 0.1
    changed_pins = json.loads(json.dumps(LOCK))
    changed_pins["stages"]["train"]["deps"][1]["md5"] = "r2"
    assert lineage.lock_hashes(changed_code)["code"] != hashes["code"]
    assert lineage.lock_hashes(changed_code)["params"] == hashes["params"]
    assert lineage.lock_hashes(changed_params)["params"] != hashes["params"]
    # a new pin is a new environment, and nothing else: not "code" (the lock file is no src/ file)
    assert lineage.lock_hashes(changed_pins)["environment"] == "r2"
    assert {k: v for k, v in lineage.lock_hashes(changed_pins).items() if k != "environment"} == \
        {k: v for k, v in hashes.items() if k != "environment"}
    without = json.loads(json.dumps(LOCK))
    without["stages"]["train"]["deps"].pop()
    assert lineage.lock_hashes(without)["environment"] is None  # a project from before the lock file was a dep


def test_read_split_names_the_files_prepare_read():
    metrics = {"train_months": "2022-11..2023-01", "validation_month": "2023-02", "test_month": "2023-03"}
    assert lineage.read_split(metrics) == {"2022-11.csv": "train", "2022-12.csv": "train", "2023-01.csv": "train",
                                           "2023-02.csv": "validation", "2023-03.csv": "test"}
    assert lineage.read_split({"roc_auc": 0.7}) == {}


def test_environment_records_the_lock_file_and_the_machine(tmp_path):
    lock = tmp_path / "requirements.txt"
    lock.write_text("numpy==1.0\n")
    env = lineage.environment(lock)
    assert env["env.lock_md5"] == hashlib.md5(b"numpy==1.0\n").hexdigest() == lineage.file_md5(lock)
    assert env["env.python"] == platform.python_version() and platform.machine() in env["env.platform"]
    assert "openblas" in env["env.blas"] or "mkl" in env["env.blas"] or "blis" in env["env.blas"]
    lock.write_text("numpy==1.1\n")
    assert lineage.environment(lock)["env.lock_md5"] != env["env.lock_md5"]


def test_installed_mismatches_compares_pins_with_what_is_installed(tmp_path):
    assert lineage.installed_mismatches(ROOT / "requirements.txt", ["numpy", "scikit-learn", "pandas"]) == {}
    lock = tmp_path / "requirements.txt"
    lock.write_text("# a comment\nnumpy==0.0.1\nno-such-package-xyz==1.0\nscipy>=1\n")
    found = lineage.installed_mismatches(lock)
    assert found["numpy"][0] == "0.0.1" and found["numpy"][1] not in (None, "0.0.1")
    assert found["no-such-package-xyz"] == ("1.0", None) and "scipy" not in found


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
    """A tiny credit project with three registered versions, on the clock: built on FIRST (train 2022-11..
    2023-01, validation 2023-02, test 2023-03), retrained a month later on SECOND (every snapshot rewritten,
    the window slid by a month: train 2022-12..2023-02, validation 2023-03, test 2023-04), then a param change."""
    folder = tmp_path_factory.mktemp("lineage")
    chapter = Chapter("99_lineage", folder, 1, f"sqlite:///{folder / 'mlflow.db'}")
    names = registry.start_tracking(chapter, "lineage-tests", "credit-lineage")
    stream = CreditStream(seed=5, rows_per_month=400)
    repo = dvc_project.build_credit_project(folder / "credit", stream, as_of=FIRST)
    holdout = known_as_of(stream.month(newest_complete_month(FIRST), replicate=1), FIRST)
    records = [lineage.record_training_run(repo, names.model, "first")]
    registry.promote_if_better(names.model, records[-1].version, holdout, as_of=FIRST)
    dvc_project.retrain(repo, stream, as_of=SECOND)
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
    # the clock of each run, from the pipeline's own record
    assert {k: run.data.tags[f"clock.{k}"] for k in ("as_of", "train_months", "validation_month", "test_month")} == {
        "as_of": SECOND, "train_months": "2022-12..2023-02", "validation_month": "2023-03", "test_month": "2023-04"}
    assert client.get_run(records[0].run_id).data.tags["clock.as_of"] == FIRST
    assert "roc_auc" in run.data.metrics and "as_of" not in run.data.metrics  # strings are tags, not metrics


def test_record_training_run_records_the_environment(project):
    repo, model, records = project
    client = mlflow.MlflowClient()
    run = client.get_run(records[1].run_id)
    book_lock = lineage.file_md5(ROOT / "requirements.txt")
    train_deps = {d["path"]: d["md5"] for d in dvc_project.read_lock(repo)["stages"]["train"]["deps"]}
    # the same hash three ways: the book's lock file, dvc.lock's train dependency, the run (and the version)
    assert run.data.tags["env.lock_md5"] == train_deps["requirements.txt"] == book_lock == records[1].environment_md5
    assert run.data.tags["dvc.requirements.md5"] == book_lock
    assert client.get_model_version(model, records[1].version).tags["env.lock_md5"] == book_lock
    assert {k: run.data.tags[k] for k in ("env.python", "env.platform", "env.blas")} == {
        k: v for k, v in lineage.environment(ROOT / "requirements.txt").items() if k != "env.lock_md5"}
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="environment/requirements.txt")
    assert lineage.file_md5(logged) == book_lock


def test_record_training_run_refuses_a_lock_file_changed_after_repro(project):
    repo, model, _ = project
    lock = repo / "requirements.txt"
    original = lock.read_text()
    lock.write_text(original + "extra-package==1.0\n")
    sh("git commit -q -am 'Pin one more package, without dvc repro'", cwd=repo, echo=False)
    try:
        with pytest.raises(RuntimeError, match="does not match the md5 dvc.lock recorded"):
            lineage.record_training_run(repo, model, "stale environment")
    finally:
        sh("git reset -q --hard HEAD~1", cwd=repo, echo=False)
    assert lock.read_text() == original


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

    # forward: 2023-04 (first complete on SECOND) reached versions 2 and 3 only; 2022-11 (train of version 1
    # only) reached version 1 only; 2022-12 (complete, so unchanged: one file version) reached all three
    assert lineage.versions_reached(graph, lineage.batch_node(graph, "2023-04.csv")) == ["2", "3"]
    assert lineage.versions_reached(graph, lineage.batch_node(graph, "2022-11.csv")) == ["1"]
    assert lineage.versions_reached(graph, lineage.batch_node(graph, "2022-12.csv")) == ["1", "2", "3"]
    # only the files prepare read: the months still maturing in data/raw reach no model
    relpaths = {graph.nodes[n]["relpath"] for n in lineage.batches(graph)}
    assert relpaths == {f"{m}.csv" for m in ("2022-11", "2022-12", "2023-01", "2023-02", "2023-03", "2023-04")}
    data_v1 = f"data:{records[0].data_md5[:8]}"
    assert graph.nodes[data_v1]["files"] == len(dvc_project.default_months(FIRST)) > 5
    # the same file, 2023-03 (complete on FIRST), was version 1's test month and version 2's validation month
    march = lineage.batch_node(graph, "2023-03.csv")
    roles = {graph.nodes[v]["md5"][:8]: d["role"] for _, v, d in graph.out_edges(march, data=True)}
    assert roles == {records[0].data_md5[:8]: "test", records[1].data_md5[:8]: "validation"}
    # backward: the champion (version 2) came from five batches, one data version, one params version
    upstream = lineage.query_lineage(graph, "alias:champion", lineage.ASCENDANTS)
    assert [graph.nodes[n]["label"] for n in upstream if "relpath" in graph.nodes[n]] == [
        "2022-12", "2023-01", "2023-02", "2023-03", "2023-04"]
    assert lineage.query_lineage(graph, "alias:champion", "Ascendants", "ModelPackage") == ["version:2"]
    assert f"data:{records[1].data_md5[:8]}" in upstream and f"model:{records[1].model_md5[:8]}" in upstream
    # versions 2 and 3 share data, code and environment, not parameters
    v2, v3 = (set(lineage.query_lineage(graph, f"version:{v}", "Ascendants")) for v in ("2", "3"))
    shared_types = {graph.nodes[n]["type"] for n in v2 & v3}
    assert {"DataSet", "Code", "Image"} <= shared_types and "Parameters" not in shared_types
    # the environment: one Image node, the lock file's md5, upstream of every version
    images = [n for n, d in graph.nodes(data=True) if d["type"] == "Image"]
    assert images == [f"env:{records[0].environment_md5[:8]}"]
    assert lineage.versions_reached(graph, images[0]) == ["1", "2", "3"]


def test_a_month_file_changes_as_its_outcomes_arrive(project):
    """2023-04 was still maturing on FIRST (in data/raw, unread) and complete on SECOND: two file versions."""
    repo, model, records = project
    versions = {}
    for record in records[:2]:
        manifest = lineage.dir_manifest(repo, lineage.lock_hashes(lineage.lock_at(repo, record.commit))["data"])
        versions[record.version] = {e["relpath"]: e["md5"] for e in manifest}
    assert versions["1"]["2023-04.csv"] != versions["2"]["2023-04.csv"]
    assert versions["1"]["2022-12.csv"] == versions["2"]["2022-12.csv"]  # complete before FIRST: unchanged


def test_batch_node_names_the_versions_when_a_file_is_ambiguous():
    graph = nx.DiGraph()
    for md5 in ("aaaa1111", "bbbb2222"):
        graph.add_node(f"batch:2023-04.csv@{md5}", relpath="2023-04.csv", md5=md5 + "ffff", layer=0)
    with pytest.raises(KeyError, match=r"appears 2 times.*\['aaaa1111', 'bbbb2222'\]; pass md5"):
        lineage.batch_node(graph, "2023-04.csv")
    assert lineage.batch_node(graph, "2023-04.csv", md5="bbbb") == "batch:2023-04.csv@bbbb2222"
    with pytest.raises(KeyError, match="appears 0 times"):
        lineage.batch_node(graph, "2099-01.csv")


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
