"""Background servers for chapters and tests: start on a free 127.0.0.1 port, wait until healthy, always stop.

>>> with BackgroundServer(["python", "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
...                       name="files", health_path="/") as server:
...     print(server.url)

A server runs in its own process group, so stopping it also stops whatever it spawned (uvicorn workers,
gunicorn children). Every server still running is stopped when the Python process exits normally; on Linux
the server also gets SIGTERM if the kernel that started it is killed, so no orphan is left behind.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from .chapter import QUIET_ENV

_RUNNING: set["BackgroundServer"] = set()


class ServerFailed(RuntimeError):
    """The server exited or never became healthy; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent():  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BackgroundServer:
    """A command that serves HTTP on ``127.0.0.1:{port}``; ``{port}`` in the command is filled in."""

    def __init__(self, command: list[str], name: str = "server", health_path: str | None = "/",
                 port: int | None = None, cwd: str | Path | None = None, env: dict | None = None,
                 log_path: str | Path | None = None, startup_timeout: float = 60):
        self.name, self.health_path, self.startup_timeout = name, health_path, startup_timeout
        self.port = port or free_port()
        self.command = [str(part).replace("{port}", str(self.port)) for part in command]
        self.cwd, self.env = cwd, env or {}
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "BackgroundServer":
        if self.running:
            return self
        env = {**os.environ, **QUIET_ENV, **self.env}
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so use it only from the main thread.
        on_fork = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=on_fork)
        _RUNNING.add(self)
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_healthy(self):
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with status {self.process.returncode} before it was "
                                   f"healthy. End of its log:\n{self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise ServerFailed(f"{self.name} was not healthy on {self.url}{self.health_path or ''} after "
                           f"{self.startup_timeout:.0f} s. End of its log:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        if self.health_path is None:  # no HTTP health route: a listening socket is enough
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the server and everything it started; SIGKILL what is left after ``timeout`` s."""
        _RUNNING.discard(self)
        if self.process is None or self.process.poll() is not None:
            return
        try:
            family = [psutil.Process(self.process.pid)]
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass
            for proc in family:  # children that left the process group
                try:
                    proc.send_signal(signum)
                except psutil.NoSuchProcess:
                    pass
            _, family = psutil.wait_procs(family, timeout=wait)
            if not family:
                break
        self.process.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.url}" if self.running else "stopped"
        return f"<BackgroundServer {self.name}: {state}>"


def running_servers() -> list[BackgroundServer]:
    """Servers started here and not yet stopped."""
    return [server for server in _RUNNING if server.running]


@atexit.register
def stop_all() -> None:
    """Stop every server this process started (runs on normal interpreter exit)."""
    for server in list(_RUNNING):
        server.stop()
