"""The MLflow model registry, the way the book uses it: log, register, alias, and promote through a gate.

Chapter 04 teaches these steps in the notebook; later chapters (deployment, retraining) reuse them from
here. The public functions, stable from chapter 04 on:

``start_tracking(chapter, experiment, model) -> Tracking``
    Make ``experiment`` the active MLflow experiment and return the names to use. With the chapter's own
    SQLite store the names are used as given and artifacts go to ``workspace/<chapter>/mlartifacts``
    (MLflow's default, ``./mlruns``, would land in the notebook's folder). On a shared class server each
    run of a chapter gets names of its own (``-<user>-<date>-<time>``), so students, and a second run, never
    move each other's aliases.
``log_credit_model(model, train_frame, *, name="model", registered_model_name=None, tags=None)``
    Log a fitted credit pipeline to the active MLflow run (or a new one) with a signature, an input example
    and *explicit* ``pip_requirements`` (MLflow otherwise infers them in a subprocess: about 4 s instead of
    about 1 s). Registers it too when ``registered_model_name`` is given. Returns MLflow's ``ModelInfo``
    (``.model_uri``, ``.run_id``, ``.registered_model_version``).
``model_input(frame) -> DataFrame``
    The feature columns as a scoring request carries them (categories as strings), for ``pyfunc`` models.
``register(model_uri, name, tags=None) -> ModelVersion``
    Register a logged model as a new version of ``name``.
``set_alias(name, alias, version)``
    Point ``alias`` (``"champion"``, ``"challenger"``) at a version; an alias names one version at a time.
``get_version(name, alias) -> ModelVersion`` (``.version`` is an int from SQLite, a str over REST: compare
    with ``str(...)``) and ``load_model(name, alias="champion")``
    Look a version up by alias, or load it as a scikit-learn pipeline (``models:/name@alias``). A missing
    alias or model raises :class:`AliasNotFound` with a message that says what exists and what to do.
``promote_if_better(name, challenger_version, holdout, *, as_of, metric="auc", min_improvement=0.0) -> GateDecision``
    The validation gate, decided on the date ``as_of``: every row of the holdout must have its outcome known
    by then (:func:`~mlops_lab.simulator.check_known` raises
    :class:`~mlops_lab.simulator.LabelFromTheFuture` before anything changes; select rows with
    :func:`~mlops_lab.simulator.known_as_of`). It scores the challenger and the current champion on the
    *same* holdout and moves the ``champion`` alias to the challenger only if it beats the champion by at
    least ``min_improvement`` (or if there is no champion yet). A rejected challenger leaves the champion
    untouched. The decision, both scores and the date are also written as tags on the challenger version,
    so the registry remembers why and when.

Aliases replace MLflow's deprecated stages (Staging/Production): a deployment loads
``models:/credit@champion`` and never needs to know a version number.
"""
from __future__ import annotations

import getpass
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass

import mlflow
import mlflow.sklearn
import numpy
import pandas
import sklearn
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from .models import evaluate
from .simulator import CATEGORICAL, FEATURES, TARGET, as_of_date, check_known

CHAMPION, CHALLENGER = "champion", "challenger"
# What the model needs to be loaded elsewhere. Given explicitly, MLflow skips inferring it (a subprocess
# that imports the model: about 3 s of every log_model call).
PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}", f"pandas=={pandas.__version__}",
                    f"numpy=={numpy.__version__}"]
METRICS = ("auc", "accuracy")  # both: higher is better (see mlops_lab.models.evaluate)


class AliasNotFound(LookupError):
    """A registered model or one of its aliases does not exist; the message lists what does."""


@dataclass(frozen=True)
class Tracking:
    """The names a chapter logs and registers under (see :func:`start_tracking`)."""

    experiment: str
    experiment_id: str
    model: str


def start_tracking(chapter, experiment: str, model: str) -> Tracking:
    """Activate ``experiment`` for ``chapter`` (a :class:`mlops_lab.chapter.Chapter`); return the names to use."""
    if chapter.uses_class_server:
        suffix = f"-{getpass.getuser()}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment, model = experiment + suffix, model + suffix
    # Importing mlflow sets its logger back to INFO (timestamped "Creating initial MLflow database tables"
    # lines in the book); start_chapter ran before that import, so quiet it again here.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Artifact progress bars leave stray blank lines in a notebook's outputs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(chapter.tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None if chapter.uses_class_server else (chapter.workspace / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mlflow.set_tracking_uri(chapter.tracking_uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    return Tracking(experiment, experiment_id, model)


def model_input(frame: pandas.DataFrame) -> pandas.DataFrame:
    """The model's input as a scoring request carries it: the feature columns, categories as plain strings.

    MLflow's schema enforcement (``pyfunc`` models, scoring servers) refuses pandas' ``category`` dtype
    ("Can not safely convert category"), and JSON has no such type anyway.
    """
    return frame[FEATURES].astype({column: str for column in CATEGORICAL})


def model_uri(name: str, alias: str = CHAMPION) -> str:
    """``models:/name@alias``: the URI a deployment loads, independent of version numbers."""
    return f"models:/{name}@{alias}"


def log_credit_model(model, train_frame: pandas.DataFrame, *, name: str = "model",
                     registered_model_name: str | None = None, tags: dict | None = None,
                     input_rows: int = 3):
    """Log a fitted credit pipeline with signature, input example and explicit pip requirements.

    The signature is inferred from the first rows of ``model_input(train_frame)`` and the model's P(default) (the pyfunc flavour
    serves ``predict_proba``, so a scoring server returns probabilities, not bare 0/1 decisions).
    Logs into the active run, or starts and ends a run of its own if none is active.
    """
    example = model_input(train_frame.head(input_rows))
    with warnings.catch_warnings():
        # "Inferred schema contains integer column(s)": our features never have missing values.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, model.predict_proba(example))
        kwargs = dict(name=name, signature=signature, input_example=example, pip_requirements=PIP_REQUIREMENTS,
                      pyfunc_predict_fn="predict_proba", registered_model_name=registered_model_name,
                      tags=tags)
        if mlflow.active_run() is not None:
            return mlflow.sklearn.log_model(model, **kwargs)
        with mlflow.start_run():
            return mlflow.sklearn.log_model(model, **kwargs)


def register(model_uri: str, name: str, tags: dict | None = None) -> ModelVersion:
    """Register a logged model (``ModelInfo.model_uri`` or ``runs:/<run>/model``) as a new version of ``name``."""
    return mlflow.register_model(model_uri, name, tags=tags)


def set_alias(name: str, alias: str, version, client: MlflowClient | None = None) -> None:
    """Point ``alias`` at ``version`` of ``name`` (moving it if it pointed elsewhere)."""
    (client or MlflowClient()).set_registered_model_alias(name, alias, str(version))


def get_version(name: str, alias: str, client: MlflowClient | None = None) -> ModelVersion:
    """The version of ``name`` that ``alias`` points at; :class:`AliasNotFound` if there is none."""
    client = client or MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = sorted(m.name for m in client.search_registered_models())
        raise AliasNotFound(f"there is no registered model {name!r} on this tracking server "
                            f"(registered models: {known or 'none'}). Register one first, e.g. "
                            f"log_credit_model(..., registered_model_name={name!r}).") from None
    if alias not in model.aliases:
        have = ", ".join(f"{a!r} -> version {v}" for a, v in sorted(model.aliases.items())) or "no aliases"
        raise AliasNotFound(f"registered model {name!r} has no alias {alias!r} (it has {have}). Point it at a "
                            f"version first: set_alias({name!r}, {alias!r}, version).")
    return client.get_model_version(name, str(model.aliases[alias]))


def load_model(name: str, alias: str = CHAMPION):
    """Load the scikit-learn pipeline behind ``models:/name@alias``, with a clear error if it is missing."""
    get_version(name, alias)  # raises AliasNotFound with a helpful message
    return mlflow.sklearn.load_model(model_uri(name, alias))


def _date(when) -> str:
    """``2024-04-01`` for a midnight timestamp, the full ISO form otherwise."""
    return str(when.date()) if when == when.normalize() else when.isoformat()


@dataclass(frozen=True)
class GateDecision:
    """What the validation gate decided, and the evidence: both scores on the same holdout."""

    model_name: str
    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None  # the champion before the gate (None: there was none)
    champion_score: float | None
    min_improvement: float
    holdout_rows: int
    promoted: bool
    reason: str

    @property
    def serving_version(self) -> str | None:
        """The version the ``champion`` alias points at after the gate."""
        return self.challenger_version if self.promoted else self.champion_version

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        verdict = "PROMOTED" if self.promoted else "REJECTED"
        return f"{verdict} {self.model_name} v{self.challenger_version}: {self.reason}"


def promote_if_better(name: str, challenger_version, holdout: pandas.DataFrame, *, as_of, metric: str = "auc",
                      min_improvement: float = 0.0, client: MlflowClient | None = None) -> GateDecision:
    """Move ``champion`` to the challenger only if it beats the champion on ``holdout`` by ``min_improvement``.

    ``as_of`` is the date of the decision: every holdout row's outcome must be known by then, or
    :class:`~mlops_lab.simulator.LabelFromTheFuture` is raised before the registry is touched. Both
    versions are loaded from the registry and scored on the same rows, so the comparison is fair. The
    challenger gets the ``challenger`` alias while it is judged; on promotion ``champion`` moves to it and
    ``challenger`` is removed, on rejection nothing else changes. Tags ``gate.decision``,
    ``gate.<metric>``, ``gate.champion_<metric>``, ``gate.champion_version`` and ``gate.as_of`` on the
    challenger version record the evidence.
    """
    as_of = as_of_date(as_of)  # a clear TypeError/ValueError for a missing or malformed date
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} (higher is better), got {metric!r}")
    if len(holdout) == 0:
        raise ValueError("the holdout is empty: the gate needs rows to score both models on")
    check_known(holdout, as_of, TARGET)  # before any alias moves: a refused gate changes nothing
    client = client or MlflowClient()
    challenger_version = str(challenger_version)
    client.get_model_version(name, challenger_version)  # fails clearly if the version does not exist
    set_alias(name, CHALLENGER, challenger_version, client)
    challenger_score = float(evaluate(load_model(name, CHALLENGER), holdout, as_of=as_of)[metric])

    try:
        champion = get_version(name, CHAMPION, client)
    except AliasNotFound:
        champion = None
    if champion is None:
        champion_version = champion_score = None
        promoted, reason = True, f"no champion yet; the challenger's {metric} is {challenger_score:.4f}"
    elif str(champion.version) == challenger_version:
        champion_version, champion_score = challenger_version, challenger_score
        promoted, reason = False, f"version {challenger_version} already is the champion"
        client.delete_registered_model_alias(name, CHALLENGER)
    else:
        champion_version = str(champion.version)
        champion_score = float(evaluate(load_model(name, CHAMPION), holdout, as_of=as_of)[metric])
        gain = challenger_score - champion_score
        promoted = gain >= min_improvement
        relation = "meets" if promoted else "misses"
        reason = (f"{metric} {challenger_score:.4f} vs champion v{champion_version} {champion_score:.4f} "
                  f"on the same {len(holdout)} rows labelled by {_date(as_of)}: a gain of {gain:+.4f} "
                  f"{relation} the required {min_improvement:+.4f}")

    decision = GateDecision(name, metric, challenger_version, challenger_score, champion_version, champion_score,
                            float(min_improvement), len(holdout), promoted, reason)
    tags = {"gate.decision": "promoted" if promoted else "rejected", f"gate.{metric}": f"{challenger_score:.6f}",
            "gate.champion_version": champion_version or "none", "gate.as_of": _date(as_of)}
    if champion_score is not None:
        tags[f"gate.champion_{metric}"] = f"{champion_score:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, challenger_version, key, value)
    if promoted:
        set_alias(name, CHAMPION, challenger_version, client)
        client.delete_registered_model_alias(name, CHALLENGER)
    return decision
