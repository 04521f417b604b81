"""Chapter setup: one call at the top of every chapter gives it a fresh, isolated, quiet workspace.

``start_chapter("01_maturity_levels")``:

- deletes and recreates ``workspace/01_maturity_levels/`` under the book's root (git-ignored), so a
  chapter runs the same the second time as the first and never sees another chapter's leftovers;
- fixes the seeds of ``random`` and NumPy's global generator;
- turns MLflow and DVC telemetry off (each would otherwise try DNS on import) and gives git an identity
  so commits work on a fresh machine or CI runner;
- points MLflow at a SQLite store inside the workspace, unless ``MLFLOW_TRACKING_URI`` was set before
  the kernel started (a class tracking server), which it then leaves alone;
- picks the chapter's DVC remote: a folder beside each repository in the workspace, or, when
  ``MLOPS_LAB_DVC_REMOTE`` was set (a class remote, e.g. ``ssh://student-01@host:2222/srv/.../student-01``),
  ``<MLOPS_LAB_DVC_REMOTE>/<chapter>``, which it empties (through DVC's filesystem for that URL) so a second
  run starts clean, as the workspace does (the SSH key comes from the student's ``~/.ssh/config``, which
  every clone of every repository uses: instructors/class_server.md);
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
from urllib.parse import urlsplit

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
DVC_REMOTE_ENV = "MLOPS_LAB_DVC_REMOTE"
_current: Chapter | None = None   # the chapter started last: dvc_project files its repos' remotes under it


@dataclass(frozen=True)
class Chapter:
    name: str
    workspace: Path
    seed: int
    tracking_uri: str
    dvc_remote: str | None = None   # <class remote>/<chapter>; None: a folder remote beside each repo

    @property
    def uses_class_server(self) -> bool:
        return self.tracking_uri == _CLASS_TRACKING_URI

    def __repr__(self) -> str:  # no absolute paths and no password in what the book shows
        tracking = (f"a class tracking server ({_shown_server(self.tracking_uri)})" if self.uses_class_server
                    else "a SQLite store in the workspace")
        remote = f"the class remote {_shown_remote(self.dvc_remote)}" if self.dvc_remote else "a folder in the workspace"
        return (f"Chapter({self.name!r}, workspace=workspace/{self.name}/, seed={self.seed}, "
                f"MLflow: {tracking}, DVC remote: {remote})")


def _without_secrets(url: str) -> str:
    """``url`` without a password (a user name stays: it says whose account this is)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}@{host}").geturl()


def _shown_server(uri: str) -> str:
    """``http://host:port as <MLflow account>``: the server and whose runs these are."""
    parts = urlsplit(uri)
    shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or parts.username
    return f"{shown} as {user}" if user else shown


def _shown_remote(url: str) -> str:
    """A remote URL as the book may show it; a folder on this machine by its last two names only."""
    if "://" in url:
        return _without_secrets(url)
    return f"(a folder on this machine: .../{'/'.join(Path(url).parts[-2:])})"


def class_dvc_remote() -> str | None:
    """The class's DVC remote for this student (``MLOPS_LAB_DVC_REMOTE``), without a trailing slash."""
    url = os.environ.get(DVC_REMOTE_ENV, "").strip()
    return url.rstrip("/") or None


def current_chapter() -> Chapter | None:
    """The chapter :func:`start_chapter` started last in this kernel (None before any)."""
    return _current


def remote_filesystem(url: str):
    """DVC's filesystem for a remote ``url`` and the path in it.

    The same code DVC's ``push`` uses, so what works here works there (dvc-ssh does not check the server's
    host key: it passes ``known_hosts=None`` to asyncssh).
    """
    from dvc.fs import get_cloud_fs

    cls, config, path = get_cloud_fs(None, url=url)
    return cls(**config), path


def _clear_remote_folder(url: str) -> None:
    """Delete ``url`` on its remote (a second run of a chapter must not find the first run's objects)."""
    fs, path = remote_filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


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
    # Cleared, not stamped per run: each chapter keeps one folder on the class remote (its size bounded,
    # its path stable for the instructor), and counts of remote objects mean this run's objects.
    dvc_remote = f"{class_dvc_remote()}/{name}" if class_dvc_remote() else None
    if dvc_remote:
        _clear_remote_folder(dvc_remote)
    global _current
    _current = Chapter(name, workspace, seed, tracking_uri, dvc_remote)
    return _current
