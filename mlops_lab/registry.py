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
``set_alias(name, alias, version, when=None)``
    Point ``alias`` (``"champion"``, ``"challenger"``) at a version; an alias names one version at a time.
    Every move is recorded as a timestamped event on the registered model (``when``: the book's date of the
    decision, now by default), so :func:`serving_version` answers "which version did ``alias`` name on date D",
    which is "which model decided applicant X".
``get_version(name, alias) -> ModelVersion`` (``.version`` is an int from SQLite, a str over REST: compare
    with ``str(...)``) and ``load_model(name, alias="champion")``
    Look a version up by alias, or load it as a scikit-learn pipeline (``models:/name@alias``). A missing
    alias or model raises :class:`AliasNotFound` with a message that says what exists and what to do.
``promote_if_better(name, challenger_version, holdout, *, as_of, metric="auc", min_improvement=0.0) -> GateDecision``
    The validation gate, decided on the date ``as_of``: every row of the holdout must have its outcome known
    by then (:func:`~mlops_lab.simulator.check_known` raises
    :class:`~mlops_lab.simulator.LabelFromTheFuture` before anything changes; select rows with
    :func:`~mlops_lab.simulator.known_as_of`). It scores the challenger and the current champion on the
    *same* holdout and moves the ``champion`` alias to the challenger only if the gain's one-sided 95 % lower
    bound (paired: DeLong for the AUC, the per-loan differences for accuracy) is above ``min_improvement``,
    and the challenger's own lower bound is above the floor (``min_score``: a coin's AUC, or the accuracy of
    approving everyone), which is all a first model must beat. A quarantined version is refused unscored. A
    rejected challenger leaves the champion untouched and keeps no alias. The decision, both scores, the
    bound and the date are also written as tags on the challenger version, so the registry remembers why and
    when.

Aliases replace MLflow's deprecated stages (Staging/Production): a deployment loads
``models:/credit@champion`` and never needs to know a version number.
"""
from __future__ import annotations

import getpass
import json
import logging
import os
import re
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
from scipy import stats

from .simulator import CATEGORICAL, FEATURES, TARGET, as_of_date, check_known

CHAMPION, CHALLENGER = "champion", "challenger"
# What the model needs to be loaded elsewhere. Given explicitly, MLflow skips inferring it (a subprocess
# that imports the model: about 3 s of every log_model call).
PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}", f"pandas=={pandas.__version__}",
                    f"numpy=={numpy.__version__}"]
METRICS = ("auc", "accuracy")  # both: higher is better (see mlops_lab.models.evaluate)
ALPHA = 0.05                  # one-sided: a challenger no better than the champion is promoted at most 5 % of the time
QUARANTINE = "quarantine"     # a version tag: its value says why no gate may promote the version
EVENT = "alias_event."        # registered-model tags: one per alias move, numbered in order


class AliasNotFound(LookupError):
    """A registered model or one of its aliases does not exist; the message lists what does."""


@dataclass(frozen=True)
class Tracking:
    """The names a chapter logs and registers under (see :func:`start_tracking`)."""

    experiment: str
    experiment_id: str
    model: str


def class_suffix() -> str:
    """``-<user>-<date>-<time>``: a student's names on a shared tracking server. The user is the MLflow
    account (``MLFLOW_TRACKING_USERNAME``: thirty students may share one JupyterHub Unix user), else the OS
    user; characters outside letters, digits, ``_.-`` become ``_`` (an e-mail's ``@``)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    return f"-{re.sub(r'[^A-Za-z0-9_.-]', '_', user)}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_tracking(chapter, experiment: str, model: str) -> Tracking:
    """Activate ``experiment`` for ``chapter`` (a :class:`mlops_lab.chapter.Chapter`); return the names to use."""
    if chapter.uses_class_server:
        suffix = class_suffix()
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


def set_alias(name: str, alias: str, version, client: MlflowClient | None = None, *, when=None) -> None:
    """Point ``alias`` at ``version`` of ``name`` (moving it if it pointed elsewhere), and record the move."""
    client = client or MlflowClient()
    client.set_registered_model_alias(name, alias, str(version))
    _record_alias_event(client, name, alias, str(version), when)


def remove_alias(name: str, alias: str, client: MlflowClient | None = None, *, when=None) -> None:
    """Remove ``alias`` from ``name`` (it then names no version), and record it."""
    client = client or MlflowClient()
    client.delete_registered_model_alias(name, alias)
    _record_alias_event(client, name, alias, None, when)


def _record_alias_event(client, name: str, alias: str, version: str | None, when) -> None:
    when = pandas.Timestamp.now(tz="UTC").tz_localize(None) if when is None else as_of_date(when)
    number = sum(key.startswith(EVENT) for key in client.get_registered_model(name).tags) + 1
    event = {"alias": alias, "version": version, "when": when.isoformat(),
             "recorded": pandas.Timestamp.now(tz="UTC").isoformat()}
    client.set_registered_model_tag(name, f"{EVENT}{number:05d}", json.dumps(event))


def alias_history(name: str, client: MlflowClient | None = None) -> pandas.DataFrame:
    """Every recorded move of every alias of ``name``, in order: alias, version (None: removed), when."""
    tags = (client or MlflowClient()).get_registered_model(name).tags
    events = [json.loads(value) for key, value in sorted(tags.items()) if key.startswith(EVENT)]
    frame = pandas.DataFrame(events, columns=["alias", "version", "when", "recorded"])
    frame["version"] = pandas.Series([event["version"] for event in events], index=frame.index, dtype=object)
    frame["when"] = pandas.to_datetime(frame["when"])
    return frame


def serving_version(name: str, at, alias: str = CHAMPION, client: MlflowClient | None = None) -> str | None:
    """The version ``alias`` named on date ``at`` (the newest move on or before it), None if it named none:
    which model decided an application made that day."""
    history = alias_history(name, client)
    before = history[(history["alias"] == alias) & (history["when"] <= as_of_date(at))]
    return None if before.empty else before.sort_values("when", kind="stable").iloc[-1]["version"]


def get_version(name: str, alias: str, client: MlflowClient | None = None) -> ModelVersion:
    """The version of ``name`` that ``alias`` points at; :class:`AliasNotFound` if there is none."""
    client = client or MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        # A class server with basic auth answers PERMISSION_DENIED for a model that does not exist *or* is
        # another student's: it does not say which. Either way there is no version here this user may serve.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED"):
            raise
        known = sorted(m.name for m in client.search_registered_models())
        raise AliasNotFound(f"there is no registered model {name!r} that you can read on this tracking server "
                            f"(readable here: {known or 'none'}). Register one first, e.g. "
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
    gain_lower_bound: float | None = None        # one-sided (1 - alpha) bound of challenger - champion, paired
    challenger_lower_bound: float | None = None  # one-sided (1 - alpha) bound of the challenger's own score
    min_score: float | None = None               # the floor its bound must clear: a coin, or approving everyone

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
                      min_improvement: float = 0.0, min_score: float | None = None, alpha: float = ALPHA,
                      client: MlflowClient | None = None) -> GateDecision:
    """Move ``champion`` to the challenger only if it beats the champion on ``holdout`` beyond the noise.

    ``as_of`` is the date of the decision: every holdout row's outcome must be known by then, or
    :class:`~mlops_lab.simulator.LabelFromTheFuture` is raised before the registry is touched. Both versions
    are loaded from the registry and scored on the same rows; the gain's one-sided ``1 - alpha`` lower bound
    (paired: DeLong for the AUC, the per-loan differences for accuracy) must exceed ``min_improvement``, and
    the challenger's own lower bound must exceed ``min_score`` (by default a coin's AUC of 0.5, or the
    accuracy of approving everyone): with no champion yet, that floor is the whole gate. A version tagged
    ``quarantine`` is refused before it is scored. The challenger holds the ``challenger`` alias only while it
    is judged: on promotion ``champion`` moves to it, on rejection it keeps no alias. Every alias move is
    recorded on the date ``as_of`` (:func:`serving_version`), and the evidence as ``gate.*`` tags.
    """
    as_of = as_of_date(as_of)  # a clear TypeError/ValueError for a missing or malformed date
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} (higher is better), got {metric!r}")
    if len(holdout) == 0:
        raise ValueError("the holdout is empty: the gate needs rows to score both models on")
    check_known(holdout, as_of, TARGET)  # before any alias moves: a refused gate changes nothing
    client = client or MlflowClient()
    challenger_version = str(challenger_version)
    version = client.get_model_version(name, challenger_version)  # fails clearly if the version does not exist
    y = holdout[TARGET].to_numpy(dtype=int)
    floor = float(min_score if min_score is not None else 0.5 if metric == "auc" else max(y.mean(), 1 - y.mean()))
    champion = _champion_or_none(name, client)
    champion_version = None if champion is None else str(champion.version)
    if QUARANTINE in (version.tags or {}):
        reason = f"version {challenger_version} is quarantined ({version.tags[QUARANTINE]}): no gate promotes it"
        decision = GateDecision(name, metric, challenger_version, float("nan"), champion_version, None,
                                float(min_improvement), len(holdout), False, reason, min_score=floor)
        client.set_model_version_tag(name, challenger_version, "gate.decision", "rejected")
        return decision

    set_alias(name, CHALLENGER, challenger_version, client, when=as_of)
    p_challenger = load_model(name, CHALLENGER).predict_proba(holdout[FEATURES])[:, 1]
    challenger_score, challenger_low = _score_bound(y, p_challenger, metric, alpha)
    champion_score = gain_low = None
    if champion is None:
        promoted = challenger_low > floor
        reason = (f"no champion yet; the challenger's {metric} is {challenger_score:.4f}, its {1 - alpha:.0%} lower "
                  f"bound {challenger_low:.4f} {'>' if promoted else '<='} the floor {floor:.4f}")
    elif champion_version == challenger_version:
        champion_score, promoted = challenger_score, False
        reason = f"version {challenger_version} already is the champion"
    else:
        p_champion = load_model(name, CHAMPION).predict_proba(holdout[FEATURES])[:, 1]
        champion_score, _ = _score_bound(y, p_champion, metric, alpha)
        gain, gain_low = _paired_gain(y, p_champion, p_challenger, metric, alpha)
        promoted = gain_low > min_improvement and challenger_low > floor
        reason = (f"{metric} {challenger_score:.4f} vs champion v{champion_version} {champion_score:.4f} "
                  f"on the same {len(holdout)} rows labelled by {_date(as_of)}: a gain of {gain:+.4f}, whose "
                  f"{1 - alpha:.0%} lower bound {gain_low:+.4f} {'clears' if promoted else 'does not clear'} "
                  f"the required {min_improvement:+.4f}")

    decision = GateDecision(name, metric, challenger_version, challenger_score, champion_version, champion_score,
                            float(min_improvement), len(holdout), promoted, reason, gain_low, challenger_low, floor)
    tags = {"gate.decision": "promoted" if promoted else "rejected", f"gate.{metric}": f"{challenger_score:.6f}",
            "gate.champion_version": champion_version or "none", "gate.as_of": _date(as_of)}
    if champion_score is not None:
        tags[f"gate.champion_{metric}"] = f"{champion_score:.6f}"
    if gain_low is not None:
        tags["gate.gain_lower_bound"] = f"{gain_low:.6f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, challenger_version, key, value)
    if promoted:
        set_alias(name, CHAMPION, challenger_version, client, when=as_of)
    remove_alias(name, CHALLENGER, client, when=as_of)        # a judged version keeps no challenger alias
    return decision


def _champion_or_none(name: str, client):
    try:
        return get_version(name, CHAMPION, client)
    except AliasNotFound:
        return None


def _score_bound(y, p, metric: str, alpha: float) -> tuple[float, float]:
    """A model's score on the holdout and its one-sided ``1 - alpha`` lower bound (DeLong's variance for the
    AUC, the binomial one for accuracy at the 0.5 threshold of :func:`mlops_lab.models.evaluate`)."""
    from .gates import delong

    z = stats.norm.ppf(1 - alpha)
    if metric == "auc":
        auc, cov, _ = delong(y, [p])
        return float(auc[0]), float(auc[0] - z * numpy.sqrt(cov[0, 0]))
    correct = ((p >= 0.5) == y).mean()
    return float(correct), float(correct - z * numpy.sqrt(correct * (1 - correct) / len(y)))


def _paired_gain(y, p_champion, p_challenger, metric: str, alpha: float) -> tuple[float, float]:
    """Challenger minus champion on the same rows, and the one-sided lower bound of that paired difference."""
    from .gates import _diff_se, delong

    z = stats.norm.ppf(1 - alpha)
    if metric == "auc":
        auc, cov, _ = delong(y, [p_champion, p_challenger])
        return float(auc[1] - auc[0]), float(auc[1] - auc[0] - z * _diff_se(cov))
    differences = ((p_challenger >= 0.5) == y).astype(float) - ((p_champion >= 0.5) == y)
    gain = differences.mean()
    return float(gain), float(gain - z * differences.std(ddof=1) / numpy.sqrt(len(y)))
