"""Background servers outlive neither the process that started them nor depend on which thread started them,
and leave no temporary log behind."""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid

import psutil
import pytest

# PR_SET_PDEATHSIG delivers SIGTERM at once when the parent dies, and http.server exits on SIGTERM at once;
# 5 s leaves a wide margin for a loaded 2-core machine.
GONE_WITHIN_S = 5.0

PARENT = textwrap.dedent("""
    import sys, threading, time
    from mlops_lab.servers import BackgroundServer

    def start():
        server = BackgroundServer([sys.executable, '-m', 'http.server', '{port}', '--bind', '127.0.0.1']).start()
        print(server.process.pid, server.url, flush=True)

    if sys.argv[1] == 'worker':
        worker = threading.Thread(target=start)
        worker.start()
        worker.join()          # the starting thread is gone; the server must keep serving
    else:
        start()
    time.sleep(60)
""")


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def wait_until_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("thread", ["worker", "main"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_server_dies_with_its_parent_whichever_thread_started_it(thread, signum):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, thread], stdout=subprocess.PIPE, text=True)
    try:
        pid, url = parent.stdout.readline().split()
        pid = int(pid)
        time.sleep(0.3)  # long enough for a death signal tied to the finished worker thread to arrive
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            assert response.status == 200, "the server outlives the thread that started it"
        parent.send_signal(signum)
        parent.wait(timeout=10)
        assert wait_until_gone(pid, GONE_WITHIN_S), f"server {pid} outlived its parent by {GONE_WITHIN_S} s"
    finally:
        parent.kill()
        parent.stdout.close()
        if "pid" in locals() and isinstance(pid, int) and not gone(pid):
            psutil.Process(pid).kill()  # leave no orphan behind a failing test


# ---- logs: a server started without a log_path leaves no file behind -------------------------------------
def temporary_logs(prefix: str) -> set[str]:
    """Files in the temporary folder that a server named ``prefix...`` could have written its log to."""
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(prefix)}


def test_servers_without_a_log_path_leave_no_file_in_the_temporary_folder():
    """A build left 63 *.log files in /tmp: each BackgroundServer made one (mkstemp) and never deleted it. The log
    must still be readable while the server runs and in ServerFailed's message once the process died."""
    from mlops_lab.servers import BackgroundServer, ServerFailed

    prefix = f"leak-{uuid.uuid4().hex[:8]}"
    before = temporary_logs(prefix)
    with BackgroundServer([sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
                          name=f"{prefix}-healthy") as server:
        for path in ("/first", "/second"):  # read the log between requests: reading must not disturb writing
            try:
                urllib.request.urlopen(server.url + path, timeout=5)
            except urllib.error.HTTPError:
                pass
            wait_for(lambda path=path: path in server.log_tail(), 5)
        assert "GET /first" in server.log_tail() and "GET /second" in server.log_tail(), server.log_tail()
    with pytest.raises(ServerFailed, match="broken config"):  # the log, read after the process exited
        BackgroundServer(["bash", "-c", "echo broken config; exit 3"], name=f"{prefix}-failing").start()
    with pytest.raises(ServerFailed, match="still loading"):  # the log of a server stopped for not answering
        BackgroundServer(["bash", "-c", "echo still loading; exec sleep 30"], name=f"{prefix}-mute",
                         startup_timeout=1).start()
    assert temporary_logs(prefix) == before


def test_a_given_log_path_is_kept(tmp_path):
    from mlops_lab.servers import BackgroundServer, ServerFailed

    log = tmp_path / "bad.log"
    with pytest.raises(ServerFailed, match="broken config"):
        BackgroundServer(["bash", "-c", "echo broken config; exit 3"], name="bad", log_path=log).start()
    assert log.read_text() == "broken config\n"


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()
