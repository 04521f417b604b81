"""Shared test setup: the repository root, the `book` marker, and the built HTML book.

Tests marked ``book`` need the built HTML (``make book`` first; ``make book-checks`` runs them). On a
laptop they skip when it is missing; under ``CI=true`` they fail instead, so CI never passes by skipping.
``BOOK_HTML_DIR`` points them at a book built elsewhere (``jupyter-book build . --path-output DIR`` writes
``DIR/_build/html``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "book: needs the built HTML in _build/html (run `make book` first)")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> None:
    """Skip on a laptop; under CI=true a missing prerequisite is a failure, never a skip."""
    if under_ci():
        pytest.fail(f"{message} (CI=true: not skipping)", pytrace=False)
    pytest.skip(message)


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_html() -> Path:
    """The built HTML book: ``$BOOK_HTML_DIR`` or ``_build/html`` under the repository root."""
    html = Path(os.environ.get("BOOK_HTML_DIR") or ROOT / "_build" / "html")
    if not html.is_absolute():
        html = ROOT / html
    if not (html / "index.html").is_file():
        skip_or_fail(f"no built book at {html} (index.html missing): run `make book` first")
    return html


@pytest.fixture(scope="session")
def student_html() -> Path:
    """The student HTML (``make student-book``): ``$STUDENT_HTML_DIR`` or ``_build/student-book/_build/html``."""
    html = Path(os.environ.get("STUDENT_HTML_DIR") or ROOT / "_build" / "student-book" / "_build" / "html")
    if not html.is_absolute():
        html = ROOT / html
    if not (html / "index.html").is_file():
        skip_or_fail(f"no student book at {html} (index.html missing): run `make student-book` first")
    return html


@contextlib.contextmanager
def temporary_tracking(folder: Path, experiment: str):
    """A SQLite MLflow store in ``folder`` with ``experiment`` active (artifacts in ``folder``, through
    ``registry.start_tracking``); ``MLFLOW_TRACKING_URI`` is restored afterwards. Yields the store's URI."""
    import mlflow

    from mlops_lab.chapter import Chapter
    from mlops_lab.registry import start_tracking

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        start_tracking(Chapter(experiment, folder, 0, uri), experiment, "credit")
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes to 127.0.0.1:``port`` and read until the server closes the connection: all it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
