"""Background servers for chapters and tests: start on a free 127.0.0.1 port, wait until healthy, always stop.

>>> with BackgroundServer(["python", "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
...                       name="files", health_path="/") as server:
...     print(server.url)

A server runs in its own process group, so stopping it also stops whatever it spawned (uvicorn workers,
gunicorn children). Every server still running is stopped when the Python process exits normally; on Linux
the server also gets SIGTERM if the kernel that started it is killed (SIGKILL or SIGTERM), whichever thread
started it, so no orphan is left behind.

A server's output goes to ``log_path`` if one is given (kept), otherwise to an unlinked temporary file: it has
no name in the temporary folder, so nothing is left there even if the process that started it is killed, and
its space is freed when the server is stopped (:meth:`BackgroundServer.log_tail` reads it until then).
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from functools import partial
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


def _die_with_parent(parent_pid: int):  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died before prctl: no signal will come
            os._exit(1)


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. A server forked
# from a short-lived worker thread would be killed when that thread ends, and without the setting it
# outlives a killed kernel. So every server is forked by one spawner thread that lives as long as the
# process: the signal then comes exactly when the process dies, whichever thread asked for the server.
_spawn_requests: "queue.Queue[tuple[Future, dict]]" = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawn_forever(requests: "queue.Queue[tuple[Future, dict]]") -> None:
    while True:
        done, popen_kwargs = requests.get()
        try:
            done.set_result(subprocess.Popen(**popen_kwargs, preexec_fn=partial(_die_with_parent, os.getpid())))
        except BaseException as error:  # hand Popen's failure to the thread that asked
            done.set_exception(error)


def _spawn(**popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(**popen_kwargs)``, forked by the spawner thread (started on first use, and again
    in a forked copy of this process, where the thread does not exist)."""
    global _spawner, _spawn_requests
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawn_requests = queue.Queue()  # a forked copy's queue may hold its parent's locks or requests
            _spawner = threading.Thread(target=_spawn_forever, args=(_spawn_requests,), name="server-spawner",
                                        daemon=True)
            _spawner.start()
        requests = _spawn_requests
    done: Future = Future()
    requests.put((done, popen_kwargs))
    return done.result()


class BackgroundServer:
    """A command that serves HTTP on ``127.0.0.1:{port}``; ``{port}`` in the command is filled in."""

    def __init__(self, command: list[str], name: str = "server", health_path: str | None = "/",
                 port: int | None = None, cwd: str | Path | None = None, env: dict | None = None,
                 log_path: str | Path | None = None, startup_timeout: float = 60):
        self.name, self.health_path, self.startup_timeout = name, health_path, startup_timeout
        self.port = port or free_port()
        self.command = [str(part).replace("{port}", str(self.port)) for part in command]
        self.cwd, self.env = cwd, env or {}
        self.log_path = Path(log_path) if log_path else None
        self._temporary_log = None  # without a log_path: an unlinked file, open from start to stop
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
        with self._new_log() as log:
            self.process = _spawn(args=self.command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        _RUNNING.add(self)
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _new_log(self):
        """The file the server writes to: ``log_path``, or a fresh unlinked temporary file that we keep open."""
        if self.log_path is not None:
            return open(self.log_path, "wb")
        self._close_temporary_log()
        self._temporary_log = tempfile.TemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115 (until stop)
        return contextlib.nullcontext(self._temporary_log)

    def _close_temporary_log(self):
        if self._temporary_log is not None:
            self._temporary_log.close()
            self._temporary_log = None

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
        """SIGTERM the server and everything it started; SIGKILL what is left after ``timeout`` s. A temporary
        log is closed (and so gone): ``log_tail`` reads it only until then."""
        _RUNNING.discard(self)
        try:
            self._terminate(timeout)
        finally:
            self._close_temporary_log()

    def _terminate(self, timeout: float) -> None:
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
        """The last ``lines`` lines of the server's output (a temporary log: until the server is stopped)."""
        try:
            text = self._read_log()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _read_log(self) -> str:
        if self.log_path is not None:
            return self.log_path.read_text(errors="replace")
        if self._temporary_log is None:
            raise FileNotFoundError("no temporary log: the server is not started or was stopped")
        # pread, not seek + read: the server writes through a copy of the same file descriptor, which shares
        # its file offset, so moving the offset here would make the server overwrite its own log.
        fd = self._temporary_log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

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
