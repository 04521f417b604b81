"""The credit pipeline as a real git + DVC project on the book's clock: built, advanced and retrained.

Chapters 02 and 03 teach the commands one by one; later chapters (04 registry, 05 lineage, 12 drift-
triggered retraining) need the same project without re-teaching it, so it is rebuilt here, with real git
and real DVC run as subprocesses (no mocks), deterministically from the simulator.

**The clock.** The project's data is what the lender's warehouse holds on a date, ``as_of``: each raw month
file ``data/raw/<YYYY-MM>.csv`` is ``snapshot(stream.month(m), as_of)`` (applications made by then; a label
and its known date only where the lender knows it by then; declined applicants never have one; the
simulator's ``*_unseen_by_lender`` columns are never written). So a month's file really changes as its
outcomes arrive: advancing the clock (:func:`retrain`) rewrites it, and DVC versions each rewrite.
``params.yaml`` holds ``prepare.as_of`` (ISO date: the day the model is trained) and ``prepare.label``
(``"default"``, known 12 months after the application or on the default; or ``"early_delinquency"``, known
3 + 1 months after it). The **prepare** stage splits by time, as credit-risk teams do:

- the **test** month is the newest application month whose every label is known on ``as_of`` (for
  ``default`` that is month t-13 on the first day of month t; t-5 for ``early_delinquency``): out of time,
  used only for the report;
- the **validation** month is the month before it: every choice (the decision threshold, experiments) is
  made on it;
- the **training** months are the ``prepare.window_months`` complete months before that (0: every
  complete month in ``data/raw``).

Only rows with a known label are used (declined applicants have none). Prepare refuses, with a message
that names the problem, a label whose known date is after ``as_of`` (a label from the future), a raw file
that is older than ``as_of`` (an approved loan of a complete month without its label), and a window that
``data/raw`` does not cover.

**The environment is an input.** :func:`write_pipeline` copies the book's pinned lock file (the
repository's ``requirements.txt``, found beside the package or under :func:`~mlops_lab.chapter.book_root`)
into the project as ``requirements.txt``, a dependency of the **train** stage: ``dvc.lock`` records its
md5 (``lock["stages"]["train"]["deps"]``, path ``requirements.txt``), and changing a pin reruns training.

API:

- ``init_repo(path) -> Path``: ``git init`` + ``dvc init``, analytics off in the repo config, a DVC
  remote ``storage`` at :func:`remote_url` (a folder ``<path>/../dvc-remote/<name>``, :func:`remote_path`;
  with ``MLOPS_LAB_DVC_REMOTE`` set, ``<MLOPS_LAB_DVC_REMOTE>/<chapter>/<repo>``), a first commit. :func:`remote_fs` opens
  the remote, wherever it is, for a chapter to look inside.
- ``write_months(repo, stream, months, *, as_of) -> list[Path]``: write each month's snapshot on ``as_of``
  to ``data/raw/<YYYY-MM>.csv`` (no git, no DVC). ``add_months(repo, stream, months, *, as_of)`` also runs
  ``dvc add data/raw`` (one tracked folder: one ``data/raw.dvc`` whose every version is a data version) and
  commits; ``add_month(repo, stream, month, *, as_of) -> Path`` does one month.
- ``default_months(as_of, label="default", window_months=3) -> range``: the months ``months=None`` means:
  from the first training month (the ``window_months`` + 2 months that end at the newest complete month for
  ``label``: training, validation, test) to the newest month with any application by ``as_of`` (the month
  of ``as_of``, holding the applications of its first days).
  On 2024-04-01 with ``default``: 2022-11 .. 2024-04, eighteen files, five of them complete.
- ``write_pipeline(repo, params=None) -> Path``: the stage scripts ``src/{prepare,featurize,train,
  evaluate}.py``, ``params.yaml`` (:data:`DEFAULT_PARAMS` updated by ``params``, section by section),
  ``dvc.yaml`` and ``requirements.txt``.
- ``build_credit_project(path, stream=None, *, as_of, months=None, params=None, tag="v1.0") -> Path``:
  all of the above (the months in one commit; ``prepare.as_of`` set to ``as_of``), then ``dvc repro``,
  ``dvc push``, a commit and a tag. The model is ``models/model.joblib`` (a scikit-learn Pipeline: raw
  :data:`FEATURES` in, P(label) out); ``metrics.json`` holds the test month's ``roc_auc``, ``accuracy``,
  ``precision``, ``recall``, ``cost_per_application`` and ``test_rows``, the validation month's
  ``validation_roc_auc``, ``validation_cost_per_application`` and ``validation_rows``, ``train_rows``, and
  the clock: ``as_of`` (ISO date), ``label``, ``train_months`` (``"YYYY-MM..YYYY-MM"``, first..last),
  ``validation_month`` and ``test_month`` (``"YYYY-MM"``).
- ``retrain(repo, stream, *, as_of, label=None, message=None) -> dict``: advance the clock to ``as_of``
  (never back): rewrite every raw month's snapshot as of ``as_of`` (late outcomes change a month's labels),
  add the months applied for by then that are missing (and older ones the label's window needs), set
  ``prepare.as_of`` (and ``prepare.label`` if given), ``dvc repro`` (which re-hashes ``data/raw`` and
  updates ``data/raw.dvc``), ``dvc push``, commit; returns the new metrics.
- ``read_metrics(repo) -> dict`` (strings included), ``numeric_metrics(metrics) -> dict[str, float]``
  (only the numbers, e.g. for ``mlflow.log_metrics``), ``read_lock(repo) -> dict``, ``read_params(repo)``.
- ``advance_clock(repo, stream, *, as_of, label=None) -> dict``: :func:`retrain`'s first half (re-export
  every month as of ``as_of``, set ``prepare.as_of``), without DVC or git; returns the params.

**Level 1 (chapter 07), opt-in.** ``write_level1_pipeline(repo, params=None)`` writes the same four stages
plus two gates (:data:`LEVEL1_STAGES`): ``validate_data`` before ``prepare`` runs chapter 06's data
contract (``mlops_lab.contract``) on the exports the run reads and on the newest whole month (also against
bounds from the month before it), writes ``reports/data_validation.json``/``.md`` and exits non-zero on a
bad batch, so ``dvc repro`` stops there (``prepare`` depends on the report); ``validate_model`` after
``evaluate`` judges the candidate against ``champion/model.joblib`` (exported from the registry by the
orchestrator, git-ignored) on the test month with ``mlops_lab.gates.judge`` and writes ``reports/gate.json``.
``export_champion(repo, model, version)``, ``read_report(repo, "data" | "gate")`` and ``data_hash(repo)`` (the
md5 of ``data/raw`` in ``data/raw.dvc``) go with it; ``mlops_lab.orchestration`` runs it.

``stream=None`` means ``CreditStream(seed=2024, rows_per_month=2000)``. Importing this module puts the
running interpreter's ``bin/`` first on PATH (:func:`use_this_python`), so ``dvc`` and the stages'
``python`` are the course environment's. A build takes several seconds, nearly all of it process start-up
(about a second per dvc command or stage); ``tools/bench_dvc_project.py`` measures it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

from .chapter import book_root, class_dvc_remote, current_chapter, remote_filesystem
from .shell import sh
from .simulator import (EARLIEST_MONTH, KNOWN, TARGET, CreditStream, month_label, month_start,
                        newest_complete_month, snapshot)

LABELS = tuple(KNOWN)          # ("default", "early_delinquency")
DEFAULT_PARAMS = {
    "prepare": {"as_of": None, "label": TARGET, "window_months": 3},
    "featurize": {"log_scale": ["income", "loan_amount"], "drop": []},
    "train": {"C": 1.0, "class_weight": None, "max_iter": 1000},
    "evaluate": {"threshold": 0.5, "cost_missed_default": 5.0, "cost_declined_payer": 1.0},
}
STAGES = ("prepare", "featurize", "train", "evaluate")
LOCK_FILE = "requirements.txt"   # the environment, a dependency of the train stage (path inside the project)

PREPARE = '''\
"""prepare: on the clock, split by time: train on complete months, choose on the next, report on the newest.

A month is complete for a label on prepare.as_of when every loan applied for in it has that label known:
"default" (within 12 months on book) is known on the default or 12 months after the application, so month
m is complete from the first day of month m + 13; "early_delinquency" (30+ days past due within 3 months on
book) is known 3 + 1 months after the application (one month of reporting lag): complete from month m + 5.

- test: the newest complete month (out of time: only for the report);
- validation: the month before it (for choices: threshold, experiments);
- train: the window_months complete months before that (0: every complete month in data/raw).
Rows without a label (declined applicants) are dropped: the lender never observes them.
"""
import sys

import yaml

LAG_MONTHS = {"default": 12, "early_delinquency": 4}
KNOWN = {"default": "default_known", "early_delinquency": "early_delinquency_known"}
FEATURES = ["age", "income", "employment_years", "loan_amount", "loan_term", "debt_to_income",
            "credit_score", "open_accounts", "delinquencies_2y", "home_ownership", "purpose"]

# Check the parameters before the slow imports: a bad value fails in a tenth of a second.
params = yaml.safe_load(open("params.yaml"))["prepare"]
extra = set(params) - {"as_of", "label", "window_months"}
if extra:
    sys.exit(f"params.yaml: prepare has unknown key(s) {sorted(extra)}; it takes as_of, label, window_months")
label, window = params.get("label"), params.get("window_months")
if label not in LAG_MONTHS:
    sys.exit(f"params.yaml: prepare.label must be one of {list(LAG_MONTHS)}, got {label!r}")
if isinstance(window, bool) or not isinstance(window, int) or window < 0:
    sys.exit(f"params.yaml: prepare.window_months must be a whole number >= 0, got {window!r}")

import json
from pathlib import Path

import pandas as pd

try:
    as_of = pd.Timestamp(str(params.get("as_of")))
except ValueError:
    as_of = pd.NaT
if pd.isna(as_of):
    sys.exit(f"params.yaml: prepare.as_of must be a date such as '2024-04-01' (the day of training: only "
             f"labels known by then are used), got {params.get('as_of')!r}")

files = {pd.Period(f.stem, freq="M"): f for f in sorted(Path("data/raw").glob("*.csv"))}
lag = pd.DateOffset(months=LAG_MONTHS[label])
test_month = as_of.to_period("M") - LAG_MONTHS[label]
while test_month.end_time.normalize() + lag > as_of:     # the newest month whose every label is known
    test_month -= 1
validation_month = test_month - 1
if window:
    train_months = [validation_month - k for k in range(window, 0, -1)]
else:
    train_months = [m for m in sorted(files) if m < validation_month]
wanted = train_months + [validation_month, test_month]
missing = [str(m) for m in wanted if m not in files]
if missing or not train_months:
    sys.exit(f"prepare: on {as_of.date()} the newest month with every {label!r} label known is {test_month}; "
             f"training on {window or 'every'} month(s) before {validation_month} (validation) needs "
             f"data/raw/<month>.csv for {', '.join(missing) or 'at least one month'}, which data/raw lacks.")


def labelled(month):
    """The month's rows with a known label; refuse labels from after as_of, and files older than as_of."""
    data = pd.read_csv(files[month], parse_dates=["application_date", KNOWN[label]])
    known = data[KNOWN[label]]
    late = known > as_of
    if late.any():
        sys.exit(f"prepare: {int(late.sum())} {label!r} label(s) of {month} are known only after "
                 f"prepare.as_of {as_of.date()} (the latest on {known.max().date()}): labels from the future. "
                 f"Refusing to use them.")
    stale = data["approved"].astype(bool) & data[label].isna()
    if stale.any():
        sys.exit(f"prepare: {int(stale.sum())} approved loan(s) of {month} have no {label!r} in data/raw, but "
                 f"every one is known by {as_of.date()}: data/raw was exported before prepare.as_of. Refresh "
                 f"the snapshots (retrain) or choose an earlier as_of.")
    rows = data[data[label].notna()]                  # declined applicants: never observed
    return pd.DataFrame({"application_id": rows["application_id"], "month": str(month), **rows[FEATURES],
                         "label": rows[label].astype(int), "label_known": rows[KNOWN[label]].dt.date})


sets = {"train": pd.concat([labelled(m) for m in train_months], ignore_index=True),
        "validation": labelled(validation_month), "test": labelled(test_month)}
Path("data/prepared").mkdir(parents=True, exist_ok=True)
for name, rows in sets.items():
    rows.to_csv(f"data/prepared/{name}.csv", index=False)
split = {"as_of": str(as_of.date()), "label": label, "train_months": f"{train_months[0]}..{train_months[-1]}",
         "validation_month": str(validation_month), "test_month": str(test_month),
         "train_rows": len(sets["train"])}
Path("data/prepared/split.json").write_text(json.dumps(split, indent=2) + "\\n")
print(f"prepare: as of {as_of.date()}, label {label!r}: train on {split['train_months']} "
      f"({len(sets['train'])} rows), validate on {validation_month} ({len(sets['validation'])}), "
      f"test on {test_month} ({len(sets['test'])})")
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
X["label"] = train["label"]
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
classifier.fit(train.drop(columns="label").to_numpy(), train["label"])
model = Pipeline([("features", joblib.load("features/transformer.joblib")), ("classifier", classifier)])
Path("models").mkdir(exist_ok=True)
joblib.dump(model, "models/model.joblib")
print(f"train: logistic regression, C={C}, class_weight={class_weight}, {len(train)} rows")
'''

EVALUATE = '''\
"""evaluate: score the model on the validation month (for choices) and the test month (the report).

cost_per_application weighs the two mistakes: a missed positive (a default the model approved) loses much
of the loan, a declined good payer loses only the interest the lender would have earned. metrics.json holds
the test month's scores, the validation month's as validation_*, and the clock (from prepare's split.json).
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

model = joblib.load("models/model.joblib")


def scores(rows):
    y, p = rows["label"], model.predict_proba(rows)[:, 1]
    decline = p >= threshold
    missed, declined_payers = ((y == 1) & ~decline).sum(), ((y == 0) & decline).sum()
    cost = (params["cost_missed_default"] * missed + params["cost_declined_payer"] * declined_payers) / len(y)
    return p, {"roc_auc": roc_auc_score(y, p), "accuracy": accuracy_score(y, decline),
               "precision": precision_score(y, decline, zero_division=0), "recall": recall_score(y, decline),
               "cost_per_application": cost}


validation, test = pd.read_csv("data/prepared/validation.csv"), pd.read_csv("data/prepared/test.csv")
_, chosen_on = scores(validation)
p, reported = scores(test)
metrics = {name: round(float(value), 6) for name, value in reported.items()} | {"test_rows": len(test)}
metrics |= {f"validation_{name}": round(float(chosen_on[name]), 6) for name in ("roc_auc", "cost_per_application")}
metrics |= {"validation_rows": len(validation)} | json.loads(Path("data/prepared/split.json").read_text())
Path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\\n")
fpr, tpr, _ = roc_curve(test["label"], p)
Path("plots").mkdir(exist_ok=True)
pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(4).to_csv("plots/roc.csv", index=False)
print(f"evaluate: test month {metrics['test_month']}: AUC {metrics['roc_auc']:.3f}, cost "
      f"{metrics['cost_per_application']:.3f}; validation month {metrics['validation_month']}: cost "
      f"{metrics['validation_cost_per_application']:.3f}")
'''

DVC_YAML = f'''\
stages:
  prepare:
    cmd: python src/prepare.py
    deps: [src/prepare.py, data/raw]
    params: [prepare]
    outs: [data/prepared/train.csv, data/prepared/validation.csv, data/prepared/test.csv,
           data/prepared/split.json]
  featurize:
    cmd: python src/featurize.py
    deps: [src/featurize.py, data/prepared/train.csv]
    params: [featurize]
    outs: [features]
  train:
    cmd: python src/train.py
    deps: [src/train.py, features, {LOCK_FILE}]
    params: [train]
    outs: [models/model.joblib]
  evaluate:
    cmd: python src/evaluate.py
    deps: [src/evaluate.py, models/model.joblib, data/prepared/validation.csv, data/prepared/test.csv,
           data/prepared/split.json]
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


def remote_url(repo: str | Path) -> str:
    """The DVC remote of ``repo``: :func:`remote_path` (a local folder), or on a class remote
    ``<MLOPS_LAB_DVC_REMOTE>/<chapter>/<repo>``, so no two chapters, and no two repos of one chapter, share
    a folder. ``<repo>`` is the repo's folder name (its path inside the chapter's workspace if it is deeper).
    The chapter is the one :func:`~mlops_lab.chapter.start_chapter` started last (outside a chapter, as in
    the tests: the repo's parent folder's name).
    """
    base = class_dvc_remote()
    if base is None:
        return str(remote_path(repo))
    repo, chapter = Path(repo).resolve(), current_chapter()
    if chapter is not None and repo.is_relative_to(chapter.workspace.resolve()):
        return f"{base}/{chapter.name}/{repo.relative_to(chapter.workspace.resolve()).as_posix()}"
    return f"{base}/{repo.parent.name}/{repo.name}"


def remote_fs(repo: str | Path):
    """``(fs, root)``: DVC's filesystem of ``repo``'s remote and the remote's path in it (``fs.find``,
    ``fs.exists``, ``fs.cat_file`` work the same on a local folder and over SSH)."""
    return remote_filesystem(remote_url(repo))


def commit(repo: str | Path, message: str) -> bool:
    """Stage everything in the repo (DVC has git-ignored what it tracks) and commit; False if nothing changed."""
    _run("git add -A", repo)
    if not _run("git status --porcelain", repo).strip():
        return False
    _run(["git", "commit", "-q", "-m", message], repo)
    return True


def init_repo(path: str | Path) -> Path:
    """git init + dvc init in ``path`` (created), analytics off, its remote (:func:`remote_url`), first commit.

    The DVC config is written in one go (what ``dvc remote add -d`` and ``dvc config`` would write):
    two fewer dvc processes to start.
    """
    repo = Path(path).resolve()
    repo.mkdir(parents=True, exist_ok=True)
    if class_dvc_remote() is None:
        remote_path(repo).mkdir(parents=True, exist_ok=True)
    _run("git init -q -b main", repo)
    _run("dvc init -q", repo)
    (repo / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n    analytics = false\n"
        f"['remote \"storage\"']\n    url = {remote_url(repo)}\n")
    commit(repo, "Initialize DVC with a remote")
    return repo


def _date(as_of) -> pd.Timestamp:
    if as_of is None:
        raise TypeError("as_of is required: the date of the warehouse export, e.g. '2024-04-01'")
    try:
        stamp = pd.Timestamp(as_of)
    except (TypeError, ValueError) as error:
        raise ValueError(f"as_of must be a date such as '2024-04-01', got {as_of!r}") from error
    if stamp != stamp.normalize():
        raise ValueError(f"as_of must be a day (no time of day), got {as_of!r}")
    return stamp


def _iso(as_of) -> str:
    return str(_date(as_of).date())


def newest_month(as_of) -> int:
    """The newest month with any application by ``as_of``: the month ``as_of`` falls in."""
    stamp = _date(as_of)
    return (stamp.to_period("M") - month_start(0).to_period("M")).n


def default_months(as_of, label: str = TARGET, window_months: int = 3) -> range:
    """What ``months=None`` means: every month from the first training month to the month of ``as_of``.

    The first training month is ``window_months`` + 1 months before the newest month whose every ``label``
    is known on ``as_of`` (training months, then a validation month, then that test month); the files after
    the test month hold loans still maturing, as the lender's warehouse does. ``window_months=0`` (train on
    every complete month) is given three training months here.
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {list(LABELS)}, got {label!r}")
    first = newest_complete_month(_date(as_of), label) - (window_months or 3) - 1
    return range(max(first, EARLIEST_MONTH), newest_month(as_of) + 1)


def _month_path(repo: Path, month: int) -> Path:
    return repo / "data" / "raw" / f"{month_label(month)}.csv"


def write_months(repo: str | Path, stream: CreditStream, months, *, as_of) -> list[Path]:
    """Write each month's warehouse export on ``as_of`` (``snapshot(stream.month(m), as_of)``) to
    ``data/raw/<YYYY-MM>.csv``. Refuses a month with no application by ``as_of`` (it would be empty)."""
    repo, stamp = Path(repo).resolve(), _date(as_of)
    paths = []
    for month in months:
        if month_start(int(month)) > stamp:
            raise ValueError(f"no application of {month_label(int(month))} is known on {stamp.date()}: "
                             f"its first day is after as_of")
        target = _month_path(repo, int(month))
        target.parent.mkdir(parents=True, exist_ok=True)
        snapshot(stream.month(int(month)), stamp).to_csv(target, index=False)
        paths.append(target)
    return paths


def add_months(repo: str | Path, stream: CreditStream, months, *, as_of) -> list[Path]:
    """Write each month's snapshot on ``as_of`` to data/raw/<YYYY-MM>.csv, ``dvc add data/raw``, one commit."""
    repo = Path(repo).resolve()
    paths = write_months(repo, stream, months, as_of=as_of)
    _run("dvc add -q data/raw", repo)
    names = ", ".join(p.stem for p in paths) if len(paths) <= 3 else f"{paths[0].stem}..{paths[-1].stem}"
    commit(repo, f"Add data for {names} (as of {_iso(as_of)})")
    return paths


def add_month(repo: str | Path, stream: CreditStream, month: int, *, as_of) -> Path:
    """Add one month's snapshot as a new data version (a commit changing data/raw.dvc); returns its CSV."""
    return add_months(repo, stream, [month], as_of=as_of)[0]


def merge_params(params: dict | None = None) -> dict:
    """:data:`DEFAULT_PARAMS` with ``params`` laid over it, section by section."""
    merged = {stage: dict(values) for stage, values in DEFAULT_PARAMS.items()}
    for stage, values in (params or {}).items():
        merged.setdefault(stage, {}).update(values)
    if merged["prepare"].get("as_of") is not None:
        merged["prepare"]["as_of"] = _iso(merged["prepare"]["as_of"])
    return merged


def lock_file_source() -> Path:
    """The book's pinned lock file: ``requirements.txt`` beside the package, else under the book's root."""
    for folder in (Path(__file__).resolve().parent.parent, book_root()):
        if (folder / LOCK_FILE).is_file():
            return folder / LOCK_FILE
    raise FileNotFoundError(f"the book's {LOCK_FILE} was found neither beside the mlops_lab package nor under "
                            f"the book's root ({book_root()}); set MLOPS_LAB_ROOT to the book's folder")


def write_pipeline(repo: str | Path, params: dict | None = None) -> Path:
    """Write the stage scripts into src/, params.yaml, dvc.yaml and the environment's lock file."""
    repo = Path(repo).resolve()
    (repo / "src").mkdir(parents=True, exist_ok=True)
    for stage, text in SCRIPTS.items():
        (repo / "src" / f"{stage}.py").write_text(text)
    (repo / "params.yaml").write_text(yaml.safe_dump(merge_params(params), sort_keys=False))
    (repo / "dvc.yaml").write_text(DVC_YAML)
    shutil.copyfile(lock_file_source(), repo / LOCK_FILE)
    return repo


def read_metrics(repo: str | Path) -> dict:
    """metrics.json: the test month's scores, ``validation_*`` scores, and the clock (as_of, label, months)."""
    return json.loads((Path(repo) / "metrics.json").read_text())


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """Only the numbers of ``metrics`` (e.g. for ``mlflow.log_metrics``), as floats."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_lock(repo: str | Path) -> dict:
    """dvc.lock: for each stage, its command and the md5 hash of every dependency, parameter and output."""
    return yaml.safe_load((Path(repo) / "dvc.lock").read_text())


def read_params(repo: str | Path) -> dict:
    return yaml.safe_load((Path(repo) / "params.yaml").read_text())


def build_credit_project(path: str | Path, stream: CreditStream | None = None, *, as_of, months=None,
                         params: dict | None = None, tag: str | None = "v1.0") -> Path:
    """A complete, pushed, tagged credit project as of ``as_of``: data versions, pipeline, model, metrics."""
    stream = stream or CreditStream(seed=2024, rows_per_month=2000)
    iso = _iso(as_of)
    given = (params or {}).get("prepare", {}).get("as_of")
    if given is not None and _iso(given) != iso:
        raise ValueError(f"params prepare.as_of {given!r} differs from as_of {iso!r}: the data is exported on "
                         f"as_of, and prepare.as_of is set to it")
    params = merge_params({**(params or {}), "prepare": {**(params or {}).get("prepare", {}), "as_of": iso}})
    if months is None:
        months = default_months(iso, params["prepare"]["label"], params["prepare"]["window_months"])
    months = [int(m) for m in months]
    repo = init_repo(path)
    add_months(repo, stream, months, as_of=iso)
    write_pipeline(repo, params)
    _run("dvc repro -q", repo)
    _run("dvc push -q", repo)
    commit(repo, f"Pipeline as of {iso}: data {month_label(min(months))} to {month_label(max(months))}")
    if tag:
        _run(["git", "tag", tag], repo)
    return repo


def advance_clock(repo: str | Path, stream: CreditStream, *, as_of, label: str | None = None) -> dict:
    """Export the warehouse as of ``as_of`` into data/raw and set ``prepare.as_of``: the first half of
    :func:`retrain` (no git, no DVC). Returns the new params. Refuses to move the clock back.

    Every raw month is rewritten as the warehouse holds it on ``as_of`` (outcomes that arrived since change
    a month's labels), the months applied for by ``as_of`` that are missing are added (from the first month
    of :func:`default_months` for the label, if the project does not reach back that far), ``prepare.as_of``
    is set (and ``prepare.label`` if given).
    """
    repo = Path(repo).resolve()
    iso = _iso(as_of)
    params = read_params(repo)
    current = params["prepare"].get("as_of")
    if current is not None and _date(iso) < _date(current):
        raise ValueError(f"retrain moves the clock forward: the project is as of {_iso(current)}, got {iso}")
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {list(LABELS)}, got {label!r}")
    params["prepare"]["as_of"] = iso
    if label is not None:
        params["prepare"]["label"] = label
    existing = [(pd.Period(p.stem, freq="M") - month_start(0).to_period("M")).n
                for p in (repo / "data" / "raw").glob("*.csv")]
    window = default_months(iso, params["prepare"]["label"], params["prepare"].get("window_months", 3))
    write_months(repo, stream, range(min(existing + [window.start]), window.stop), as_of=iso)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def retrain(repo: str | Path, stream: CreditStream, *, as_of, label: str | None = None,
            message: str | None = None) -> dict:
    """Advance the project's clock to ``as_of``, rerun what changed, commit, push; the new metrics.

    :func:`advance_clock` re-exports every raw month as of ``as_of`` and sets ``prepare.as_of`` (and
    ``prepare.label`` if given); refuses to move the clock back.
    """
    repo = Path(repo).resolve()
    params = advance_clock(repo, stream, as_of=as_of, label=label)
    _run("dvc repro -q", repo)   # it re-hashes data/raw (a data source) first and updates data/raw.dvc
    _run("dvc push -q", repo)
    commit(repo, message or f"Retrain as of {params['prepare']['as_of']} ({params['prepare']['label']})")
    return read_metrics(repo)


# ---- Level 1: the same pipeline grown by two gates (chapter 07) ----------------------------------------------
# Opt-in: write_level1_pipeline() writes ch03's four stages plus a data gate before prepare and a model gate
# after evaluate. Chapters 03, 05 and 12 keep write_pipeline()'s four stages.
LEVEL1_STAGES = ("validate_data",) + STAGES + ("validate_model",)
LEVEL1_PARAMS = {
    # a clean month trips one of the reference bounds by chance at most this often (mlops_lab.contract)
    "validate_data": {"false_alarm_rate": 0.01},
    # the AUC gain's one-sided (1 - alpha) lower bound must exceed margin (mlops_lab.gates)
    "validate_model": {"margin": 0.0, "alpha": 0.05, "n_boot": 1000, "slices": True},
}
CHAMPION_DIR = "champion"      # the registry's champion, exported by the orchestrator; git-ignored
REPORTS = {"data": "reports/data_validation.json", "gate": "reports/gate.json"}

VALIDATE_DATA = '''\
"""validate_data: the data contract (chapter 06) on the monthly exports this run reads; stop on a bad batch.

The exports checked are the months prepare will read on prepare.as_of (training, validation and test) and
the newest whole month, the batch the warehouse finished last; the months in between are still maturing,
and are checked when a run first reads them. Each must pass mlops_lab.contract as of prepare.as_of: the
columns, their types and ranges, no nulls in features, unique ids, allowed categories, and labels on the
book's clock (none known after as_of, none on a declined applicant). The newest whole month must also keep
each feature's mean and each category's share within the sampling error of the month before it (a clean
month trips a bound by chance at most validate_data.false_alarm_rate of the time): a sudden break upstream,
such as a unit change, trips them. Writes reports/data_validation.json and .md, and exits non-zero naming
the problems when any export fails: dvc repro stops here, nothing downstream runs.
"""
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from mlops_lab.contract import validate
from mlops_lab.simulator import month_label, newest_complete_month

params = yaml.safe_load(open("params.yaml"))
as_of, label = pd.Timestamp(str(params["prepare"]["as_of"])), params["prepare"]["label"]
window = params["prepare"]["window_months"] or 3
false_alarm_rate = params["validate_data"]["false_alarm_rate"]
test = newest_complete_month(as_of, label)
newest = (as_of.to_period("M") - pd.Period("2024-01", "M")).n - 1          # the newest whole month
read = [month_label(m) for m in range(test - window - 1, test + 1)] + [month_label(newest)]
files = {name: Path(f"data/raw/{name}.csv") for name in dict.fromkeys(read)}
missing = [name for name, path in files.items() if not path.exists()]
if missing:
    sys.exit(f"validate_data: data/raw lacks the export(s) {missing} that a run on {as_of.date()} reads")
previous = Path(f"data/raw/{month_label(newest - 1)}.csv")
reports = [validate(pd.read_csv(path), name, as_of=as_of, false_alarm_rate=false_alarm_rate,
                    reference=pd.read_csv(previous) if name == month_label(newest) and previous.exists() else None)
           for name, path in files.items()]
failed = [r for r in reports if not r.ok]
summary = {"as_of": str(as_of.date()), "ok": not failed, "exports": list(files), "rows": sum(r.rows for r in reports),
           "checked_against_previous_month": month_label(newest), "failed": [r.to_dict() for r in failed]}
Path("reports").mkdir(exist_ok=True)
Path("reports/data_validation.json").write_text(json.dumps(summary, indent=2) + "\\n")
Path("reports/data_validation.md").write_text(
    "\\n\\n".join(r.to_markdown() for r in failed) if failed else
    f"All {len(reports)} exports ({summary['rows']} rows) pass the data contract as of {as_of.date()}.")
if failed:
    problems = "; ".join(f"{r.name}: " + ", ".join(f"{p.check} in {p.column} ({p.rows} rows)"
                                                   for p in r.problems.itertuples()) for r in failed)
    sys.exit(f"validate_data: {len(failed)} of {len(reports)} exports fail the data contract as of "
             f"{as_of.date()}: {problems}. See reports/data_validation.md; nothing downstream runs.")
print(f"validate_data: {len(reports)} exports pass the contract as of {as_of.date()}; "
      f"{month_label(newest)} within the bounds of the month before it")
'''

VALIDATE_MODEL = '''\
"""validate_model: the model gate (chapter 07): the candidate against the champion, on the same holdout.

The holdout is prepare's test month, the newest month whose every label is known on prepare.as_of: its
approved loans in data/raw, labels as known then (the gate checks it first). Neither model learned from it.
mlops_lab.gates.judge scores both on the same loans: the one-sided lower confidence bound of the AUC gain
(DeLong) must exceed validate_model.margin, the cost per application at the break-even threshold of
evaluate's two costs must not rise beyond the noise, and no slice may fall beyond its noise. The champion
is champion/model.joblib, exported from the registry by the orchestrator before dvc repro (none yet: the
incumbent policy). Writes reports/gate.json (the verdict) and reports/gate.md. A refusal is a result, not
an error: the stage succeeds either way, and registration reads the verdict.
"""
import json
from pathlib import Path

import joblib
import pandas as pd
import yaml

from mlops_lab.gates import judge
from mlops_lab.simulator import KNOWN, known_as_of

params = yaml.safe_load(open("params.yaml"))
label, as_of = params["prepare"]["label"], pd.Timestamp(str(params["prepare"]["as_of"]))
settings, costs = params["validate_model"], params["evaluate"]
split = json.loads(Path("data/prepared/split.json").read_text())
export = pd.read_csv(f"data/raw/{split['test_month']}.csv", parse_dates=["application_date", *KNOWN.values()])
holdout = known_as_of(export, as_of, label)
champion = json.loads(Path("champion/version.json").read_text())
cost_fn, cost_fp = costs["cost_missed_default"], costs["cost_declined_payer"]
verdict = judge(joblib.load("models/model.joblib"),
                joblib.load("champion/model.joblib") if champion["version"] else None, holdout,
                as_of=as_of, label=label, margin=settings["margin"], alpha=settings["alpha"],
                n_boot=settings["n_boot"], slices=settings["slices"], cost_fn=cost_fn, cost_fp=cost_fp,
                threshold=cost_fp / (cost_fp + cost_fn))
gate = verdict.to_dict() | {"champion_version": champion["version"], "holdout_month": split["test_month"],
                            "label": label}
Path("reports").mkdir(exist_ok=True)
Path("reports/gate.json").write_text(json.dumps(gate, indent=2) + "\\n")
rows = "\\n".join(f"| {c['name']} | {c['value']:+.4f} | {c['threshold']:+.4f} | {'pass' if c['passed'] else 'FAIL'} |"
                  for c in verdict.checks)
Path("reports/gate.md").write_text(f"**{'PASSED' if verdict.passed else 'REJECTED'}**: {verdict.reason}\\n\\n"
                                   f"| check | value | threshold | |\\n|---|---:|---:|---|\\n{rows}\\n")
print(f"validate_model: {verdict}")
'''

LEVEL1_DVC_YAML = f'''\
stages:
  validate_data:
    cmd: python src/validate_data.py
    deps: [src/validate_data.py, data/raw]
    params: [prepare.as_of, validate_data]
    outs:
      - {REPORTS["data"]}:
          cache: false
      - reports/data_validation.md:
          cache: false
''' + DVC_YAML.split("stages:\n", 1)[1].replace(
    "deps: [src/prepare.py, data/raw]", f"deps: [src/prepare.py, data/raw, {REPORTS['data']}]") + f'''\
  validate_model:
    cmd: python src/validate_model.py
    deps: [src/validate_model.py, models/model.joblib, {CHAMPION_DIR}, data/raw, data/prepared/split.json]
    params: [prepare.as_of, prepare.label, evaluate.cost_missed_default, evaluate.cost_declined_payer,
             validate_model]
    outs:
      - {REPORTS["gate"]}:
          cache: false
      - reports/gate.md:
          cache: false
'''


def write_level1_pipeline(repo: str | Path, params: dict | None = None) -> Path:
    """:func:`write_pipeline` grown by two gates: ``validate_data`` before prepare (prepare depends on its
    report, so a failing batch stops ``dvc repro`` there) and ``validate_model`` after evaluate. Also
    git-ignores the champion folder and writes an empty champion (none registered yet)."""
    merged = {stage: {**values, **(params or {}).get(stage, {})} for stage, values in LEVEL1_PARAMS.items()}
    repo = write_pipeline(repo, {**(params or {}), **merged})
    for stage, text in (("validate_data", VALIDATE_DATA), ("validate_model", VALIDATE_MODEL)):
        (repo / "src" / f"{stage}.py").write_text(text)
    (repo / "dvc.yaml").write_text(LEVEL1_DVC_YAML)
    ignore = repo / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    if f"/{CHAMPION_DIR}" not in lines:
        ignore.write_text("\n".join(lines + [f"/{CHAMPION_DIR}"]) + "\n")
    if not (repo / CHAMPION_DIR / "version.json").exists():
        export_champion(repo, None)
    return repo


def export_champion(repo: str | Path, model, version: str | None = None) -> Path:
    """Put the registry's champion where the gate reads it: ``champion/model.joblib`` and
    ``champion/version.json`` (``model=None``: no champion yet, the gate compares with the incumbent policy).
    """
    import joblib

    folder = Path(repo) / CHAMPION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.joblib").unlink(missing_ok=True)
    if model is not None:
        joblib.dump(model, folder / "model.joblib")
    (folder / "version.json").write_text(json.dumps({"version": None if model is None else str(version)}) + "\n")
    return folder


def read_report(repo: str | Path, which: str) -> dict:
    """A gate's report: ``which="data"`` (reports/data_validation.json) or ``"gate"`` (reports/gate.json)."""
    return json.loads((Path(repo) / REPORTS[which]).read_text())


def data_hash(repo: str | Path) -> str:
    """The md5 of the data version in the workspace (``data/raw.dvc``; dvc.lock records the same hash)."""
    return yaml.safe_load((Path(repo) / "data" / "raw.dvc").read_text())["outs"][0]["md5"]
