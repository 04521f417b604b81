"""Chapter setup: one call at the top of every chapter gives it a fresh, isolated, quiet workspace.

``start_chapter("01_maturity_levels")``:

- deletes and recreates ``workspace/01_maturity_levels/`` under the book's root (git-ignored), so a
  chapter runs the same the second time as the first and never sees another chapter's leftovers;
- fixes the seeds of ``random`` and NumPy's global generator;
- turns MLflow and DVC telemetry off (each would otherwise try DNS on import) and gives git an identity
  so commits work on a fresh machine or CI runner;
- points MLflow at a SQLite store inside the workspace, unless ``MLFLOW_TRACKING_URI`` was set before
  the kernel started (a class tracking server), which it then leaves alone;
- quiets INFO logging from MLflow, DVC and friends so the book shows what matters.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GIT_AUTHOR_NAME": "Course Student",
    "GIT_AUTHOR_EMAIL": "student@example.com",
    "GIT_COMMITTER_NAME": "Course Student",
    "GIT_COMMITTER_EMAIL": "student@example.com",
}
NOISY_LOGGERS = ["mlflow", "alembic", "dvc", "git", "urllib3", "matplotlib", "asyncio"]
# The class server's URI if the kernel started with one; anything we set later is ours to replace.
_CLASS_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


@dataclass(frozen=True)
class Chapter:
    name: str
    workspace: Path
    seed: int
    tracking_uri: str

    @property
    def uses_class_server(self) -> bool:
        return self.tracking_uri == _CLASS_TRACKING_URI

    def __repr__(self) -> str:  # no absolute paths in what the book shows
        where = "a class tracking server" if self.uses_class_server else "a SQLite store in the workspace"
        return f"Chapter({self.name!r}, workspace=workspace/{self.name}/, seed={self.seed}, MLflow: {where})"


def book_root(start: Path | None = None) -> Path:
    """The folder holding ``_toc.yml`` above ``start`` (the kernel's cwd); the cwd itself outside the book.

    ``MLOPS_LAB_ROOT`` overrides it (Colab, or a read-only checkout).
    """
    if os.environ.get("MLOPS_LAB_ROOT"):
        return Path(os.environ["MLOPS_LAB_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    return here


def start_chapter(name: str, seed: int = 2024) -> Chapter:
    """Give chapter ``name`` a fresh workspace, fixed seeds, no telemetry and a tracking store."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"chapter name must be a plain folder name like '01_maturity_levels', got {name!r}")
    workspace = book_root() / "workspace" / name
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)

    os.environ.update(QUIET_ENV)
    random.seed(seed)
    np.random.seed(seed)

    tracking_uri = _CLASS_TRACKING_URI or f"sqlite:///{workspace / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    for logger in NOISY_LOGGERS:
        logging.getLogger(logger).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
    return Chapter(name, workspace, seed, tracking_uri)
