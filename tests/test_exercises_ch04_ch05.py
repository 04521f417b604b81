"""The auto-checks of chapters 04 and 05: right answers pass, wrong ones raise under strict mode, with reasons."""
from types import SimpleNamespace

import mlflow
import networkx as nx
import pandas as pd
import pytest

from pathlib import Path

from mlops_lab import lineage, registry
from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch04, ch05
from mlops_lab.models import train
from mlops_lab.registry import GateDecision
from mlops_lab.simulator import CreditStream, known_as_of, newest_complete_month

LOCK = Path(__file__).resolve().parents[1] / "requirements.txt"


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


RUNS = pd.DataFrame({"params.C": ["0.03", "3.0", "0.3", "0.03"], "params.window_months": ["1", "1", "3", "3"],
                     "metrics.val_auc": [0.70, 0.72, 0.80, 0.79]})


def test_best_short_window(capsys):
    assert ch04.best_run(RUNS, 1)["params.C"] == "3.0"
    ch04.check_best_short_window(3, RUNS)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="not the right one"):
        ch04.check_best_short_window(0.3, RUNS)  # the best over all windows, not the 1-month one
    with pytest.raises(WrongAnswer, match="expected a number"):
        ch04.check_best_short_window("best", RUNS)
    ch04.check_best_short_window(..., RUNS)
    assert "not attempted" in capsys.readouterr().out


def test_largest_margin():
    decision = GateDecision("m", "auc", "2", 0.80, "1", 0.77, 0.0, 100, True, "", gain_lower_bound=0.012)
    ch04.check_largest_margin(0.012, decision)
    with pytest.raises(WrongAnswer):
        ch04.check_largest_margin(0.03, decision)               # the raw gain: part of it is noise
    with pytest.raises(ValueError, match="no champion"):
        ch04.check_largest_margin(0.1, GateDecision("m", "auc", "1", 0.8, None, None, 0.0, 100, True, ""))


def test_serving_version_check_calls_the_students_function(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().create_experiment("ex", artifact_location=(tmp_path / "a").as_uri())
    mlflow.set_experiment("ex")
    try:
        batch = CreditStream(seed=1, rows_per_month=300).training_window("2024-04-01", months=1)
        info = registry.log_credit_model(train(batch, as_of="2024-04-01"), batch, registered_model_name="ex-model")
        registry.set_alias("ex-model", "champion", info.registered_model_version)

        def right(name):
            try:
                return str(registry.get_version(name, "champion").version)
            except registry.AliasNotFound:
                return None

        ch04.check_serving_version(right, "ex-model")
        assert "correct" in capsys.readouterr().out
        with pytest.raises(WrongAnswer, match="raised AliasNotFound"):
            ch04.check_serving_version(lambda name: registry.get_version(name, "champion").version, "ex-model")
        with pytest.raises(WrongAnswer, match="returned '1', expected None"):
            ch04.check_serving_version(lambda name: "1", "ex-model")
        with pytest.raises(WrongAnswer, match="expected a function"):
            ch04.check_serving_version("1", "ex-model")
    finally:
        mlflow.set_tracking_uri(None)


def test_sagemaker_mapping():
    ch04.check_sagemaker_mapping(dict(ch04.SAGEMAKER))
    wrong = {**ch04.SAGEMAKER, "the champion alias": "approval status Rejected"}
    with pytest.raises(WrongAnswer, match="the champion alias"):
        ch04.check_sagemaker_mapping(wrong)


STREAM = CreditStream(seed=4, rows_per_month=300)


def test_gate_holdout_check_runs_the_students_function(capsys):
    def right(stream, as_of):
        return known_as_of(stream.month(newest_complete_month(as_of), replicate=1), as_of)

    ch04.check_gate_holdout(right, STREAM)
    assert "correct" in capsys.readouterr().out
    ch04.check_gate_holdout(..., STREAM)
    assert "not attempted" in capsys.readouterr().out
    # the applications of the month of as_of (or the month before): outcomes not known yet
    with pytest.raises(WrongAnswer, match="have no 'default' known on 2024-04-01"):
        ch04.check_gate_holdout(lambda stream, as_of: known_as_of(stream.month(2, replicate=1), "2026-01-01"),
                                STREAM)
    # only what is known of a month still maturing: passes check_known, but the early defaults only
    with pytest.raises(WrongAnswer, match="newest complete month then is 2023-03"):
        ch04.check_gate_holdout(lambda stream, as_of: known_as_of(
            stream.month(newest_complete_month(as_of) + 1, replicate=1), as_of), STREAM)
    with pytest.raises(WrongAnswer, match="replicate 0 of 2023-03: the very loans the model trained on"):
        ch04.check_gate_holdout(lambda stream, as_of: known_as_of(
            stream.month(newest_complete_month(as_of)), as_of), STREAM)
    with pytest.raises(WrongAnswer, match="returns 10 rows"):
        ch04.check_gate_holdout(lambda stream, as_of: right(stream, as_of).head(10), STREAM)
    with pytest.raises(WrongAnswer, match="raised KeyError"):
        ch04.check_gate_holdout(lambda stream, as_of: {}["x"], STREAM)
    with pytest.raises(WrongAnswer, match="expected a function"):
        ch04.check_gate_holdout(right(STREAM, "2024-04-01"), STREAM)


def small_graph() -> nx.DiGraph:
    """Two batches, two data versions, two versions; the challenger (v2) saw both batches."""
    g = nx.DiGraph()
    for month in ("2024-01", "2024-02"):
        g.add_node(f"batch:{month}", type="DataSet", label=month, relpath=f"{month}.csv", layer=0)
    g.add_node("data:a", type="DataSet", label="data a", layer=1)
    g.add_node("data:b", type="DataSet", label="data b", layer=1)
    for v in ("1", "2"):
        g.add_node(f"version:{v}", type="ModelPackage", label=f"v{v}", version=v, layer=4)
    g.add_node("alias:champion", type="Endpoint", label="@champion", layer=5)
    g.add_node("alias:challenger", type="Endpoint", label="@challenger", layer=5)
    g.add_edges_from([("batch:2024-01", "data:a"), ("batch:2024-01", "data:b"), ("batch:2024-02", "data:b"),
                      ("data:a", "version:1"), ("data:b", "version:2"), ("version:1", "alias:champion"),
                      ("version:2", "alias:challenger")], association="ContributedTo")
    return g


def test_rejected_months(capsys):
    graph = small_graph()
    assert ch05.months_behind(graph, "version:2") == ["2024-01", "2024-02"]
    assert ch05.months_behind(graph, "alias:champion") == ["2024-01"]
    ch05.check_rejected_months(["2024-02", "2024-01.csv"], graph, "2")
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match=r"missing \['2024-02'\]"):
        ch05.check_rejected_months(["2024-01"], graph, "2")
    with pytest.raises(WrongAnswer, match="expected a list"):
        ch05.check_rejected_months("2024-01", graph, "2")


def test_batch_after_rollback(monkeypatch, capsys):
    graph = small_graph()
    monkeypatch.setattr("mlops_lab.lineage.build_lineage", lambda repo, name: graph)
    fake = SimpleNamespace(get_registered_model=lambda name: SimpleNamespace(aliases={"champion": 1}))
    monkeypatch.setattr(ch05, "MlflowClient", lambda: fake)
    ch05.check_batch_after_rollback({"versions": [2, 1], "serving": 1}, "repo", "m", "2024-01.csv")
    assert "which 2024-01 reached" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="versions"):
        ch05.check_batch_after_rollback({"versions": ["2"], "serving": "1"}, "repo", "m", "2024-01.csv")
    with pytest.raises(WrongAnswer, match="serving"):
        ch05.check_batch_after_rollback({"versions": ["1", "2"], "serving": "2"}, "repo", "m", "2024-01.csv")
    ch05.check_batch_after_rollback({"versions": ["2"], "serving": "1"}, "repo", "m", "2024-02.csv")
    assert "which 2024-02 did not reach" in capsys.readouterr().out


def test_associations():
    ch05.check_associations(dict(ch05.ASSOCIATIONS))
    with pytest.raises(WrongAnswer, match="training run -> model file"):
        ch05.check_associations({**ch05.ASSOCIATIONS, "training run -> model file": "DerivedFrom"})


def test_rebuild_blockers_check_runs_the_students_function(capsys):
    here = lineage.environment(LOCK)
    run = SimpleNamespace(data=SimpleNamespace(tags={**here, "git.commit": "abc"}))

    def right(run, lock_file):
        now = lineage.environment(lock_file)
        return sorted(k for k, v in now.items() if run.data.tags.get(k) != v)

    assert ch05.expected_blockers(run, LOCK) == []
    ch05.check_rebuild_blockers(right, run, LOCK)
    assert "correct" in capsys.readouterr().out
    ch05.check_rebuild_blockers(..., run, LOCK)
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match=r"another lock file it returned \[\], expected \['env.lock_md5'\]"):
        ch05.check_rebuild_blockers(lambda run, lock_file: [], run, LOCK)
    # a function that ignores missing tags misses the run that recorded no environment
    ignores_missing = lambda run, lock_file: sorted(  # noqa: E731
        k for k, v in lineage.environment(lock_file).items() if k in run.data.tags and run.data.tags[k] != v)
    with pytest.raises(WrongAnswer, match="recorded before the environment was"):
        ch05.check_rebuild_blockers(ignores_missing, run, LOCK)
    with pytest.raises(WrongAnswer, match="raised AttributeError"):
        ch05.check_rebuild_blockers(lambda run, lock_file: run.tags, run, LOCK)
    with pytest.raises(WrongAnswer, match="not a list"):
        ch05.check_rebuild_blockers(lambda run, lock_file: "env.python", run, LOCK)


def test_changed_parameter():
    run = lambda **params: SimpleNamespace(data=SimpleNamespace(params=params))  # noqa: E731
    a, b = run(**{"train.C": "1.0", "featurize.drop": "[]"}), run(**{"train.C": "0.001", "featurize.drop": "[]"})
    assert ch05.changed_parameter(a, b) == ["train.C"]
    ch05.check_changed_parameter("train.C", a, b)
    with pytest.raises(WrongAnswer):
        ch05.check_changed_parameter("featurize.drop", a, b)
    with pytest.raises(ValueError, match="exactly one"):
        ch05.check_changed_parameter("train.C", a, a)
