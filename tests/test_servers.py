"""Background servers outlive neither the process that started them nor depend on which thread started them."""
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

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
