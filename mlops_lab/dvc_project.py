"""The credit pipeline as a real git + DVC project: built, extended and retrained by a few calls.

Chapters 02 and 03 teach the commands one by one; later chapters (04 registry, 05 lineage, 12 drift-
triggered retraining) need the same project without re-teaching it, so it is rebuilt here, with real git
and real DVC run as subprocesses (no mocks), deterministically from the simulator:

- ``init_repo(path) -> Path``: ``git init`` + ``dvc init`` in ``path``, analytics off in the repo config,
  a local DVC remote ``storage`` at ``<path>/../dvc-remote/<name>`` (:func:`remote_path`, outside the repo,
  named by its absolute path: see there why), and a first commit.
- ``add_month(repo, stream, month) -> Path``: write that month's batch of a
  :class:`~mlops_lab.simulator.CreditStream` to ``data/raw/<YYYY-MM>.csv``, ``dvc add data/raw`` (one
  tracked folder: one ``data/raw.dvc`` whose every version is a data version), git commit. Returns the
  CSV's path. ``add_months(repo, stream, months) -> list[Path]`` does several months in one commit.
- ``write_pipeline(repo, params=None) -> Path``: write the stage scripts ``src/prepare.py``,
  ``src/featurize.py``, ``src/train.py``, ``src/evaluate.py``, ``params.yaml`` (defaults
  :data:`DEFAULT_PARAMS`, updated by ``params``, section by section) and ``dvc.yaml``. Returns ``repo``.
- ``build_credit_project(path, stream=None, months=(0, 1, 2), params=None, tag="v1.0") -> Path``:
  all of the above (the months in one commit), then ``dvc repro``, ``dvc push``, a commit and a tag.
  The pipeline writes the model to ``models/model.joblib`` (a scikit-learn Pipeline: raw
  :data:`FEATURES` columns in, P(default) out) and its test-set scores to ``metrics.json`` (``roc_auc``,
  ``accuracy``, ``precision``, ``recall``, ``cost_per_application``, ``test_rows``); ``dvc.lock`` records
  the hash of every dependency and output and the parameters of every stage. ``params`` overrides
  :data:`DEFAULT_PARAMS`, e.g. ``{"prepare": {"window_months": 3}}`` trains on the last three months only.
- ``retrain(repo, stream, month, message=None) -> dict``: add a month, ``dvc repro``, commit, push;
  returns the new metrics (what a drift alarm calls, chapter 12).
- ``read_metrics(repo) -> dict``, ``read_lock(repo) -> dict``: the current metrics and ``dvc.lock``.

``stream=None`` means ``CreditStream(seed=2024, rows_per_month=2000)``. Importing this module puts the
running interpreter's ``bin/`` first on PATH (:func:`use_this_python`), so ``dvc`` and the stages'
``python`` are the course environment's. A build takes several seconds, nearly all of it process start-up
(about a second per dvc command or stage); ``tools/bench_dvc_project.py`` measures it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from .shell import sh
from .simulator import CreditStream, FEATURES, month_label

DEFAULT_PARAMS = {
    "prepare": {"window_months": 0, "test_size": 0.25, "seed": 2024},
    "featurize": {"log_scale": ["income", "loan_amount"], "drop": []},
    "train": {"C": 1.0, "class_weight": None, "max_iter": 1000},
    "evaluate": {"threshold": 0.5, "cost_missed_default": 5.0, "cost_declined_payer": 1.0},
}
STAGES = ("prepare", "featurize", "train", "evaluate")

PREPARE = '''\
"""prepare: pick the months to learn from and split them into a training and a test set."""
import sys

import yaml

# Check the parameters before the slow imports: a bad value fails in a tenth of a second.
params = yaml.safe_load(open("params.yaml"))["prepare"]
window, test_size = params.get("window_months"), params.get("test_size")
if isinstance(window, bool) or not isinstance(window, int) or window < 0:
    sys.exit(f"params.yaml: prepare.window_months must be a whole number >= 0, got {window!r}")
if isinstance(test_size, bool) or not isinstance(test_size, float) or not 0 < test_size < 1:
    sys.exit(f"params.yaml: prepare.test_size must be a number between 0 and 1, got {test_size!r}")

from pathlib import Path

import pandas as pd

files = sorted(Path("data/raw").glob("*.csv"))[-window:] if window else sorted(Path("data/raw").glob("*.csv"))
data = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
# A stratified split: the same share of defaulters in both sets.
test = data.groupby("default").sample(frac=test_size, random_state=params["seed"]).sort_index()
train = data.drop(test.index)
Path("data/prepared").mkdir(parents=True, exist_ok=True)
train.to_csv("data/prepared/train.csv", index=False)
test.to_csv("data/prepared/test.csv", index=False)
print(f"prepare: {len(files)} months, {len(train)} training and {len(test)} test rows")
'''

FEATURIZE = '''\
"""featurize: learn the feature transformation on the training set and apply it."""
import sys

import yaml

NUMERIC = ["age", "income", "employment_years", "loan_amount", "loan_term", "debt_to_income",
           "credit_score", "open_accounts", "delinquencies_2y"]
CATEGORICAL = ["home_ownership", "purpose"]

params = yaml.safe_load(open("params.yaml"))["featurize"]
log_scale, drop = params.get("log_scale"), params.get("drop")
for name, value in (("log_scale", log_scale), ("drop", drop)):
    if not isinstance(value, list) or not set(value) <= set(NUMERIC + CATEGORICAL):
        sys.exit(f"params.yaml: featurize.{name} must be a list of column names, got {value!r}")

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

features = ColumnTransformer([
    ("log", make_pipeline(FunctionTransformer(np.log1p, feature_names_out="one-to-one"), StandardScaler()),
     [c for c in NUMERIC if c in log_scale and c not in drop]),
    ("numeric", StandardScaler(), [c for c in NUMERIC if c not in log_scale and c not in drop]),
    ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
     [c for c in CATEGORICAL if c not in drop]),
])
train = pd.read_csv("data/prepared/train.csv")
X = pd.DataFrame(features.fit_transform(train), columns=features.get_feature_names_out())
X["default"] = train["default"]
Path("features").mkdir(exist_ok=True)
X.round(6).to_csv("features/train.csv", index=False)
joblib.dump(features, "features/transformer.joblib")
print(f"featurize: {X.shape[1] - 1} features")
'''

TRAIN = '''\
"""train: fit the classifier on the features; save transformer + classifier as one model."""
import sys

import yaml

params = yaml.safe_load(open("params.yaml"))["train"]
C, class_weight = params.get("C"), params.get("class_weight")
if isinstance(C, bool) or not isinstance(C, (int, float)) or C <= 0:
    sys.exit(f"params.yaml: train.C must be a positive number, got {C!r}")
if class_weight not in (None, "balanced"):
    sys.exit(f"params.yaml: train.class_weight must be null or 'balanced', got {class_weight!r}")

from pathlib import Path

import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

train = pd.read_csv("features/train.csv")
classifier = LogisticRegression(C=C, class_weight=class_weight, max_iter=params.get("max_iter", 1000))
classifier.fit(train.drop(columns="default").to_numpy(), train["default"])
model = Pipeline([("features", joblib.load("features/transformer.joblib")), ("classifier", classifier)])
Path("models").mkdir(exist_ok=True)
joblib.dump(model, "models/model.joblib")
print(f"train: logistic regression, C={C}, class_weight={class_weight}")
'''

EVALUATE = '''\
"""evaluate: score the model on the test set; write metrics.json and the ROC curve.

cost_per_application weighs the two mistakes: a missed default loses much of the loan, a declined good
payer loses only the interest the lender would have earned.
"""
import sys

import yaml

params = yaml.safe_load(open("params.yaml"))["evaluate"]
threshold = params.get("threshold")
if isinstance(threshold, bool) or not isinstance(threshold, float) or not 0 < threshold < 1:
    sys.exit(f"params.yaml: evaluate.threshold must be a number between 0 and 1, got {threshold!r}")
for name in ("cost_missed_default", "cost_declined_payer"):
    if isinstance(params.get(name), bool) or not isinstance(params.get(name), (int, float)) or params[name] < 0:
        sys.exit(f"params.yaml: evaluate.{name} must be a number >= 0, got {params.get(name)!r}")

import json
from pathlib import Path

import joblib
import pandas as pd
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score, roc_curve

test = pd.read_csv("data/prepared/test.csv")
y = test["default"]
p = joblib.load("models/model.joblib").predict_proba(test)[:, 1]
decline = p >= threshold
missed, declined_payers = ((y == 1) & ~decline).sum(), ((y == 0) & decline).sum()
cost = (params["cost_missed_default"] * missed + params["cost_declined_payer"] * declined_payers) / len(y)
metrics = {"roc_auc": roc_auc_score(y, p), "accuracy": accuracy_score(y, decline),
           "precision": precision_score(y, decline, zero_division=0), "recall": recall_score(y, decline),
           "cost_per_application": cost}
metrics = {name: round(float(value), 6) for name, value in metrics.items()} | {"test_rows": len(test)}
Path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\\n")
fpr, tpr, _ = roc_curve(y, p)
Path("plots").mkdir(exist_ok=True)
pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(4).to_csv("plots/roc.csv", index=False)
print(f"evaluate: AUC {metrics['roc_auc']:.3f}, accuracy {metrics['accuracy']:.3f}, cost {cost:.3f}")
'''

DVC_YAML = '''\
stages:
  prepare:
    cmd: python src/prepare.py
    deps: [src/prepare.py, data/raw]
    params: [prepare]
    outs: [data/prepared/train.csv, data/prepared/test.csv]
  featurize:
    cmd: python src/featurize.py
    deps: [src/featurize.py, data/prepared/train.csv]
    params: [featurize]
    outs: [features]
  train:
    cmd: python src/train.py
    deps: [src/train.py, features]
    params: [train]
    outs: [models/model.joblib]
  evaluate:
    cmd: python src/evaluate.py
    deps: [src/evaluate.py, models/model.joblib, data/prepared/test.csv]
    params: [evaluate]
    metrics:
      - metrics.json:
          cache: false
    plots:
      - plots/roc.csv:
          cache: false
          x: fpr
          y: tpr
'''
SCRIPTS = {"prepare": PREPARE, "featurize": FEATURIZE, "train": TRAIN, "evaluate": EVALUATE}


def use_this_python() -> None:
    """Put this interpreter's bin/ first on PATH, so ``dvc`` and the stages' ``python`` are the course's.

    A kernel started as ``.venv/bin/python`` does not have ``.venv/bin`` on PATH by itself.
    """
    here = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != here:
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


use_this_python()


def _run(command, repo) -> str:
    return sh(command, cwd=repo, echo=False)


def remote_path(repo: str | Path) -> Path:
    """The local DVC remote of ``repo``: ``dvc-remote/<repo name>`` beside it (never inside the repo).

    The repo's config names it by its absolute path: DVC reads the remote from each commit's own
    config, and resolves a relative local path wrongly for old commits (``push``/``fetch --all-commits``,
    ``dvc.api.read(rev=...)``; treeverse/dvc#10054).
    """
    repo = Path(repo).resolve()
    return repo.parent / "dvc-remote" / repo.name


def commit(repo: str | Path, message: str) -> None:
    """Stage everything in the repo (DVC has git-ignored what it tracks) and commit."""
    _run("git add -A", repo)
    _run(["git", "commit", "-q", "-m", message], repo)


def init_repo(path: str | Path) -> Path:
    """git init + dvc init in ``path`` (created), analytics off, a local remote beside it, first commit.

    The DVC config is written in one go (what ``dvc remote add -d`` and ``dvc config`` would write):
    two fewer dvc processes to start.
    """
    repo = Path(path).resolve()
    repo.mkdir(parents=True, exist_ok=True)
    remote_path(repo).mkdir(parents=True, exist_ok=True)
    _run("git init -q -b main", repo)
    _run("dvc init -q", repo)
    (repo / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n    analytics = false\n"
        f"['remote \"storage\"']\n    url = {remote_path(repo)}\n")
    commit(repo, "Initialize DVC with a local remote")
    return repo


def _write_month(repo: Path, stream: CreditStream, month: int) -> Path:
    target = repo / "data" / "raw" / f"{month_label(month)}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    stream.month(month).to_csv(target, index=False)
    return target


def add_months(repo: str | Path, stream: CreditStream, months) -> list[Path]:
    """Write each month's batch to data/raw/<YYYY-MM>.csv, ``dvc add data/raw``, one commit."""
    repo = Path(repo).resolve()
    paths = [_write_month(repo, stream, int(m)) for m in months]
    _run("dvc add -q data/raw", repo)
    names = ", ".join(p.stem for p in paths)
    commit(repo, f"Add data for {names}")
    return paths


def add_month(repo: str | Path, stream: CreditStream, month: int) -> Path:
    """Add one month's batch as a new data version (a commit changing data/raw.dvc); returns its CSV."""
    return add_months(repo, stream, [month])[0]


def merge_params(params: dict | None = None) -> dict:
    """:data:`DEFAULT_PARAMS` with ``params`` laid over it, section by section."""
    merged = {stage: dict(values) for stage, values in DEFAULT_PARAMS.items()}
    for stage, values in (params or {}).items():
        merged.setdefault(stage, {}).update(values)
    return merged


def write_pipeline(repo: str | Path, params: dict | None = None) -> Path:
    """Write the stage scripts into src/, plus params.yaml and dvc.yaml (the pipeline as code)."""
    repo = Path(repo).resolve()
    (repo / "src").mkdir(exist_ok=True)
    for stage, text in SCRIPTS.items():
        (repo / "src" / f"{stage}.py").write_text(text)
    (repo / "params.yaml").write_text(yaml.safe_dump(merge_params(params), sort_keys=False))
    (repo / "dvc.yaml").write_text(DVC_YAML)
    return repo


def read_metrics(repo: str | Path) -> dict:
    return json.loads((Path(repo) / "metrics.json").read_text())


def read_lock(repo: str | Path) -> dict:
    """dvc.lock: for each stage, its command and the md5 hash of every dependency, parameter and output."""
    return yaml.safe_load((Path(repo) / "dvc.lock").read_text())


def build_credit_project(path: str | Path, stream: CreditStream | None = None, months=(0, 1, 2),
                         params: dict | None = None, tag: str | None = "v1.0") -> Path:
    """A complete, pushed, tagged credit project: data versions, pipeline, model, metrics."""
    stream = stream or CreditStream(seed=2024, rows_per_month=2000)
    repo = init_repo(path)
    add_months(repo, stream, months)
    write_pipeline(repo, params)
    _run("dvc repro -q", repo)
    _run("dvc push -q", repo)
    commit(repo, f"Pipeline: train on {month_label(min(months))} to {month_label(max(months))}")
    if tag:
        _run(["git", "tag", tag], repo)
    return repo


def retrain(repo: str | Path, stream: CreditStream, month: int, message: str | None = None) -> dict:
    """Add ``month`` as a new data version, rerun the stages it changes, commit, push; the new metrics."""
    repo = Path(repo).resolve()
    _write_month(repo, stream, int(month))
    _run("dvc add -q data/raw", repo)
    _run("dvc repro -q", repo)
    _run("dvc push -q", repo)
    commit(repo, message or f"Retrain with data up to {month_label(month)}")
    return read_metrics(repo)
