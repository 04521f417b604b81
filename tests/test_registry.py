"""The registry helpers against a real MLflow store (SQLite in a temporary folder)."""
import logging

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_lab import registry
from mlops_lab.chapter import Chapter
from mlops_lab.models import evaluate, train
from mlops_lab.registry import AliasNotFound, GateDecision, promote_if_better
from mlops_lab.simulator import (FEATURES, KNOWN, TARGET, CreditStream, LabelFromTheFuture, known_as_of,
                                 newest_complete_month)

NAME = "credit-test"
AS_OF = "2024-04-01"                   # the date of every decision below: train, evaluate, gate
MONTH = newest_complete_month(AS_OF)   # 2023-03: the newest application month whose 12-month outcomes are in


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
    return {"train": stream.labelled([MONTH], AS_OF), "holdout": known_as_of(stream.month(MONTH, replicate=1), AS_OF),
            # the next application month: its outcomes are still maturing on AS_OF (the early defaults are in)
            "maturing": stream.month(MONTH + 1, replicate=1), "stream": stream}


def log_version(batch, **train_kwargs) -> str:
    info = registry.log_credit_model(train(batch, as_of=AS_OF, **train_kwargs), batch, registered_model_name=NAME)
    return str(info.registered_model_version)


def gate(version, holdout, **kwargs):
    return promote_if_better(NAME, version, holdout, as_of=AS_OF, **kwargs)


def test_log_credit_model_records_signature_example_and_requirements(store, data):
    model = train(data["train"], as_of=AS_OF)
    with mlflow.start_run() as run:
        info = registry.log_credit_model(model, data["train"], registered_model_name=NAME)
    assert info.run_id == run.info.run_id and str(info.registered_model_version) == "1"
    assert info.signature.inputs.input_names() == FEATURES
    assert info.saved_input_example_info is not None
    requirements = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    assert "scikit-learn==" in open(requirements).read()
    loaded = mlflow.sklearn.load_model(info.model_uri)
    assert evaluate(loaded, data["holdout"], as_of=AS_OF) == evaluate(model, data["holdout"], as_of=AS_OF)
    served = mlflow.pyfunc.load_model(info.model_uri)  # enforces the signature, as a scoring server does
    probabilities = served.predict(registry.model_input(data["holdout"].head(20)))
    assert probabilities.shape == (20, 2)
    assert abs(probabilities - model.predict_proba(data["holdout"][FEATURES].head(20))).max() < 1e-12
    with pytest.raises(mlflow.exceptions.MlflowException, match="income"):
        served.predict(registry.model_input(data["holdout"].head(3)).drop(columns="income"))


def test_log_credit_model_starts_its_own_run_when_none_is_active(store, data):
    info = registry.log_credit_model(train(data["train"], as_of=AS_OF), data["train"])
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
    decision = gate(version, data["holdout"])
    assert decision.promoted and decision.champion_version is None and "no champion" in decision.reason
    assert str(registry.get_version(NAME, "champion").version) == version
    assert "challenger" not in store.get_registered_model(NAME).aliases


def test_better_challenger_is_promoted_and_worse_one_is_rejected(store, data):
    small = data["train"].head(150)  # a weak champion: trained on very few rows, heavily regularised
    champion = log_version(small, C=0.001)
    gate(champion, data["holdout"])
    better = log_version(data["train"])
    decision = gate(better, data["holdout"])
    assert decision.promoted and decision.champion_version == champion
    assert decision.challenger_score > decision.champion_score
    assert str(registry.get_version(NAME, "champion").version) == better == decision.serving_version

    shuffled = data["train"].copy()
    shuffled[TARGET] = shuffled[TARGET].sample(frac=1, random_state=0).to_numpy()  # labels carry no signal
    worse = log_version(shuffled)
    rejected = gate(worse, data["holdout"])
    assert not rejected.promoted and rejected.serving_version == better
    assert str(registry.get_version(NAME, "champion").version) == better  # champion untouched
    assert set(store.get_registered_model(NAME).aliases) == {"champion"}, "a rejected version keeps no alias"
    tags = store.get_model_version(NAME, worse).tags
    assert tags["gate.decision"] == "rejected" and tags["gate.champion_version"] == better
    assert float(tags["gate.auc"]) == pytest.approx(rejected.challenger_score, abs=1e-6)
    assert str(rejected).startswith("REJECTED")


def test_min_improvement_can_reject_a_slightly_better_model(store, data):
    first = log_version(data["train"].head(1000))
    gate(first, data["holdout"])
    second = log_version(data["train"])
    decision = gate(second, data["holdout"], metric="accuracy", min_improvement=0.5)
    assert not decision.promoted and "does not clear the required +0.5000" in decision.reason
    assert str(registry.get_version(NAME, "champion").version) == first


def test_champion_against_itself_is_not_promoted_again(store, data):
    version = log_version(data["train"])
    gate(version, data["holdout"])
    again = gate(version, data["holdout"])
    assert not again.promoted and again.serving_version == version
    assert set(store.get_registered_model(NAME).aliases) == {"champion"}


def test_gate_rejects_bad_arguments(store, data):
    version = log_version(data["train"])
    with pytest.raises(ValueError, match="metric must be one of"):
        gate(version, data["holdout"], metric="loss")
    with pytest.raises(ValueError, match="holdout is empty"):
        gate(version, data["holdout"].head(0))
    with pytest.raises(TypeError, match="as_of is required"):
        promote_if_better(NAME, version, data["holdout"], as_of=None)
    with pytest.raises(TypeError, match="as_of"):
        promote_if_better(NAME, version, data["holdout"])  # a keyword the caller must give


def assert_registry_untouched(store, version):
    """No alias set, no gate evidence written: what a refused gate must leave behind."""
    assert store.get_registered_model(NAME).aliases == {}
    assert not any(key.startswith("gate.") for key in store.get_model_version(NAME, version).tags)


def test_gate_refuses_a_holdout_label_from_after_its_date(store, data):
    version = log_version(data["train"])
    # One row of the next application month whose outcome became known after AS_OF, hidden among rows that
    # are all known: the gate must notice it, not average it away.
    maturing = data["maturing"][data["maturing"]["approved"]]
    late = maturing[maturing[KNOWN[TARGET]] > pd.Timestamp(AS_OF)].head(1)
    assert len(late) == 1
    holdout = pd.concat([data["holdout"], known_as_of(late, late[KNOWN[TARGET]].max())], ignore_index=True)
    with pytest.raises(LabelFromTheFuture, match=rf"1 of {len(holdout)} rows have no 'default' known on {AS_OF}"):
        gate(version, holdout)
    assert_registry_untouched(store, version)
    # The same rows are a legitimate holdout for a decision taken once that outcome is in.
    decision = promote_if_better(NAME, version, holdout, as_of=late[KNOWN[TARGET]].max())
    assert decision.promoted and decision.holdout_rows == len(holdout)


def test_gate_refuses_declined_applicants_and_a_month_still_maturing(store, data):
    version = log_version(data["train"])
    stream = data["stream"]
    everyone = stream.month(MONTH, replicate=2)  # the world's record: declined applicants have no outcome
    with pytest.raises(LabelFromTheFuture, match="declined, never observed"):
        gate(version, everyone)
    # What is known of the next month on AS_OF is its early defaults only: a biased holdout, and not allowed
    # as one: every one of its approved loans' outcomes must be in.
    maturing = stream.month(MONTH + 1, replicate=2)
    known_early = known_as_of(maturing, AS_OF)
    assert 0 < len(known_early) < maturing["approved"].sum()
    assert known_early[TARGET].mean() > 3 * known_as_of(maturing, "2025-01-01")[TARGET].mean()
    with pytest.raises(LabelFromTheFuture):
        gate(version, known_as_of(maturing, "2025-01-01"))
    assert_registry_untouched(store, version)


def test_gate_accepts_a_label_known_on_its_date_and_records_the_date(store, data):
    version = log_version(data["train"])
    known_on = data["holdout"][KNOWN[TARGET]].max()  # the last outcome of the holdout to become known
    with pytest.raises(LabelFromTheFuture):
        promote_if_better(NAME, version, data["holdout"], as_of=known_on - pd.Timedelta(days=1))
    assert_registry_untouched(store, version)
    decision = promote_if_better(NAME, version, data["holdout"], as_of=known_on)  # known that very day: fine
    assert decision.promoted
    assert store.get_model_version(NAME, version).tags["gate.as_of"] == str(known_on.date())


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


def test_a_gain_within_the_noise_is_not_promoted(store, data):
    champion = log_version(data["train"])
    gate(champion, data["holdout"])
    nearly_the_same = log_version(data["train"], C=0.5)      # the same data, a little more regularisation
    decision = gate(nearly_the_same, data["holdout"])
    assert decision.challenger_score > decision.champion_score, "the precondition: a (tiny) positive gain"
    assert decision.gain_lower_bound < 0 and not decision.promoted, decision.reason
    assert str(registry.get_version(NAME, "champion").version) == champion


def test_a_first_model_must_beat_a_coin(store, data):
    inverted = data["train"].copy()
    inverted[TARGET] = 1 - inverted[TARGET]                   # a model that learned the labels upside down
    decision = gate(log_version(inverted), data["holdout"])
    assert decision.champion_version is None and not decision.promoted, decision.reason
    assert decision.min_score == 0.5 and decision.challenger_lower_bound <= 0.5
    assert store.get_registered_model(NAME).aliases == {}


def test_a_quarantined_version_is_refused_unscored(store, data):
    version = log_version(data["train"])
    store.set_model_version_tag(NAME, version, registry.QUARANTINE, "trained on the corrupt 2024-04 batch")
    decision = gate(version, data["holdout"])
    assert not decision.promoted and "quarantined (trained on the corrupt 2024-04 batch)" in decision.reason
    assert store.get_registered_model(NAME).aliases == {}


def test_every_alias_move_is_recorded_and_answers_which_model_decided(store, data):
    first = log_version(data["train"].head(150), C=0.001)
    promote_if_better(NAME, first, data["holdout"], as_of="2024-04-01")
    second = log_version(data["train"])
    promote_if_better(NAME, second, data["holdout"], as_of="2024-06-01")
    registry.set_alias(NAME, "champion", first, when="2024-08-15")                 # a rollback
    history = registry.alias_history(NAME)
    champion_moves = history[history["alias"] == "champion"]
    assert champion_moves["version"].tolist() == [first, second, first]
    assert [registry.serving_version(NAME, day) for day in ("2024-03-31", "2024-04-01", "2024-05-31",
                                                            "2024-06-01", "2024-08-14", "2024-09-01")] == \
        [None, first, first, second, second, first]
    assert history[history["alias"] == "challenger"]["version"].tolist() == [first, None, second, None]


def test_a_model_the_auth_model_hides_is_not_found_for_this_user_not_a_crash():
    """A class server with basic auth answers PERMISSION_DENIED for another student's (or no) model."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    class ClassServerClient:
        def get_registered_model(self, name):
            raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

        def search_registered_models(self):
            return []

        def get_model_version(self, name, version):
            raise AssertionError("never reached")

    with pytest.raises(AliasNotFound, match=r"no registered model 'theirs' that you can read.*readable here: none"):
        registry.get_version("theirs", "champion", ClassServerClient())
