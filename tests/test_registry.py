"""The registry helpers against a real MLflow store (SQLite in a temporary folder)."""
import logging

import mlflow
import pytest
from mlflow import MlflowClient

from mlops_lab import registry
from mlops_lab.chapter import Chapter
from mlops_lab.models import evaluate, train
from mlops_lab.registry import AliasNotFound, GateDecision, promote_if_better
from mlops_lab.simulator import FEATURES, TARGET, CreditStream, Drift

NAME = "credit-test"


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    # artifacts in tmp_path: MLflow's default (./mlruns) would write into the repository
    client.create_experiment("registry-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment("registry-tests")
    yield client
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def data():
    stream = CreditStream(seed=3, rows_per_month=2000)
    return {"train": stream.month(0), "holdout": stream.month(0, replicate=1)}


def log_version(batch, **train_kwargs) -> str:
    info = registry.log_credit_model(train(batch, **train_kwargs), batch, registered_model_name=NAME)
    return str(info.registered_model_version)


def test_log_credit_model_records_signature_example_and_requirements(store, data):
    model = train(data["train"])
    with mlflow.start_run() as run:
        info = registry.log_credit_model(model, data["train"], registered_model_name=NAME)
    assert info.run_id == run.info.run_id and str(info.registered_model_version) == "1"
    assert info.signature.inputs.input_names() == FEATURES
    assert info.saved_input_example_info is not None
    requirements = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    assert "scikit-learn==" in open(requirements).read()
    loaded = mlflow.sklearn.load_model(info.model_uri)
    assert evaluate(loaded, data["holdout"]) == evaluate(model, data["holdout"])
    served = mlflow.pyfunc.load_model(info.model_uri)  # enforces the signature, as a scoring server does
    probabilities = served.predict(registry.model_input(data["holdout"].head(20)))
    assert probabilities.shape == (20, 2)
    assert abs(probabilities - model.predict_proba(data["holdout"][FEATURES].head(20))).max() < 1e-12
    with pytest.raises(mlflow.exceptions.MlflowException, match="income"):
        served.predict(registry.model_input(data["holdout"].head(3)).drop(columns="income"))


def test_log_credit_model_starts_its_own_run_when_none_is_active(store, data):
    info = registry.log_credit_model(train(data["train"]), data["train"])
    assert mlflow.active_run() is None
    assert store.get_run(info.run_id).info.status == "FINISHED"


def test_missing_alias_and_missing_model_raise_clear_errors(store, data):
    version = log_version(data["train"])
    registry.set_alias(NAME, "challenger", version)
    with pytest.raises(AliasNotFound, match=r"has no alias 'champion'.*'challenger' -> version 1"):
        registry.load_model(NAME, "champion")
    with pytest.raises(AliasNotFound, match=r"no registered model 'nope'.*credit-test"):
        registry.get_version("nope", "champion")


def test_first_model_becomes_champion(store, data):
    version = log_version(data["train"])
    decision = promote_if_better(NAME, version, data["holdout"])
    assert decision.promoted and decision.champion_version is None and "no champion" in decision.reason
    assert str(registry.get_version(NAME, "champion").version) == version
    assert "challenger" not in store.get_registered_model(NAME).aliases


def test_better_challenger_is_promoted_and_worse_one_is_rejected(store, data):
    small = data["train"].head(150)  # a weak champion: trained on very few rows, heavily regularised
    champion = log_version(small, C=0.001)
    promote_if_better(NAME, champion, data["holdout"])
    better = log_version(data["train"])
    decision = promote_if_better(NAME, better, data["holdout"])
    assert decision.promoted and decision.champion_version == champion
    assert decision.challenger_score > decision.champion_score
    assert str(registry.get_version(NAME, "champion").version) == better == decision.serving_version

    shuffled = data["train"].copy()
    shuffled[TARGET] = shuffled[TARGET].sample(frac=1, random_state=0).to_numpy()  # labels carry no signal
    worse = log_version(shuffled)
    rejected = promote_if_better(NAME, worse, data["holdout"])
    assert not rejected.promoted and rejected.serving_version == better
    assert str(registry.get_version(NAME, "champion").version) == better  # champion untouched
    assert str(registry.get_version(NAME, "challenger").version) == worse
    tags = store.get_model_version(NAME, worse).tags
    assert tags["gate.decision"] == "rejected" and tags["gate.champion_version"] == better
    assert float(tags["gate.auc"]) == pytest.approx(rejected.challenger_score, abs=1e-6)
    assert str(rejected).startswith("REJECTED")


def test_min_improvement_can_reject_a_slightly_better_model(store, data):
    first = log_version(data["train"].head(1000))
    promote_if_better(NAME, first, data["holdout"])
    second = log_version(data["train"])
    decision = promote_if_better(NAME, second, data["holdout"], metric="accuracy", min_improvement=0.5)
    assert not decision.promoted and "misses" in decision.reason
    assert str(registry.get_version(NAME, "champion").version) == first


def test_champion_against_itself_is_not_promoted_again(store, data):
    version = log_version(data["train"])
    promote_if_better(NAME, version, data["holdout"])
    again = promote_if_better(NAME, version, data["holdout"])
    assert not again.promoted and again.serving_version == version
    assert set(store.get_registered_model(NAME).aliases) == {"champion"}


def test_gate_rejects_bad_arguments(store, data):
    version = log_version(data["train"])
    with pytest.raises(ValueError, match="metric must be one of"):
        promote_if_better(NAME, version, data["holdout"], metric="loss")
    with pytest.raises(ValueError, match="holdout is empty"):
        promote_if_better(NAME, version, data["holdout"].head(0))


def test_start_tracking_keeps_artifacts_in_the_workspace(tmp_path, capfd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    chapter = Chapter("99_demo", tmp_path, 1, uri)
    logging.getLogger("mlflow").setLevel(logging.INFO)  # as importing mlflow leaves it
    names = registry.start_tracking(chapter, "exp", "credit")
    assert "Creating initial MLflow database" not in capfd.readouterr().err  # no timestamped INFO lines
    assert (names.experiment, names.model) == ("exp", "credit")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert run.info.experiment_id == names.experiment_id
    assert (tmp_path / "mlartifacts").is_dir() and list((tmp_path / "mlartifacts").rglob("note.txt"))
    assert registry.start_tracking(chapter, "exp", "credit").experiment_id == names.experiment_id  # reused
    mlflow.set_tracking_uri(None)


def test_start_tracking_gives_each_run_on_a_class_server_its_own_names(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'class.db'}"
    monkeypatch.setattr("mlops_lab.chapter._CLASS_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a class server chooses where artifacts go; here MLflow's default
    names = registry.start_tracking(Chapter("99_demo", tmp_path / "ws", 1, uri), "exp", "credit")
    assert names.experiment.startswith("exp-") and names.model.startswith("credit-")
    assert names.experiment[len("exp"):] == names.model[len("credit"):]
    assert MlflowClient(uri).get_experiment(names.experiment_id).name == names.experiment
    mlflow.set_tracking_uri(None)


def test_decision_is_a_plain_record():
    decision = GateDecision("m", "auc", "2", 0.8, "1", 0.7, 0.0, 100, True, "better")
    assert decision.as_dict()["challenger_score"] == 0.8 and decision.serving_version == "2"
    assert registry.model_uri("m", "champion") == "models:/m@champion"
