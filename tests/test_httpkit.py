"""The HTTP base both servers use: bounded threads, the full backlog, idle connections closed, bounded bodies.

Timing bounds are derived from the stated timeouts (idle 0.5 s, body 0.5 s here) with a margin of 1 s for a
loaded machine; nothing is timed for speed.
"""
from __future__ import annotations

import math
import socket
import threading
import time

import pytest

from conftest import raw_exchange
from mlops_lab.httpkit import BoundedServer, LimitedBodyHandler, listen_backlog

IDLE_S, BODY_S, MARGIN_S = 0.5, 0.5, 1.0


class Echo(LimitedBodyHandler):
    """Answers a POST with the length of its body; counts handler threads running at once."""

    timeout = IDLE_S
    body_timeout_s = BODY_S
    max_body_bytes = 1000
    active = 0
    most = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.most = max(cls.most, cls.active)
        try:
            body = self.read_body()
            if body is not None:
                time.sleep(0.005)
                self.send_json(200, str(len(body)).encode())
        finally:
            with cls.lock:
                cls.active -= 1


@pytest.fixture
def server():
    handler = type("Handler", (Echo,), {"active": 0, "most": 0, "lock": threading.Lock()})
    httpd = BoundedServer(("127.0.0.1", 0), handler, max_threads=4)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def post(port: int, body: bytes = b"{}") -> bytes:
    return raw_exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))


def test_the_backlog_is_the_kernels():
    assert BoundedServer.request_queue_size == listen_backlog() > 5


def test_a_burst_is_all_answered_by_at_most_max_threads(server):
    port, start, answers = server.server_address[1], threading.Barrier(64), []

    def client():
        start.wait()
        answers.append(post(port))

    clients = [threading.Thread(target=client) for _ in range(64)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(30)
    assert len(answers) == 64 and all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert server.RequestHandlerClass.most <= 4


def test_an_idle_flood_is_closed_and_others_are_still_served(server):
    port, idle = server.server_address[1], []
    for _ in range(10):                                   # connected, sending nothing: more than the 4 threads
        idle.append(socket.create_connection(("127.0.0.1", port)))
    started = time.monotonic()
    answer = post(port)
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200")
    # at worst every idle connection ahead of it held a thread for one idle timeout, 4 at a time
    assert waited < math.ceil(10 / 4) * IDLE_S + MARGIN_S, waited
    for conn in idle:
        conn.settimeout(MARGIN_S)
        assert conn.recv(1) == b"", "the server closed the idle connection"
        conn.close()


@pytest.mark.parametrize("headers, status", [
    (b"Content-Length: abc\r\n", b"400"), (b"Content-Length: -5\r\n", b"400"),
    (b"Content-Length: 1001\r\n", b"413"), (b"Transfer-Encoding: chunked\r\n", b"411")])
def test_a_body_of_unknown_or_excessive_size_is_refused_and_closed(server, headers, status):
    answer = raw_exchange(server.server_address[1], b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer
    assert b'"error_code"' in answer


def test_a_client_that_stops_mid_body_gets_a_408_within_the_body_timeout(server):
    started = time.monotonic()
    answer = raw_exchange(server.server_address[1], b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < BODY_S + MARGIN_S
    assert post(server.server_address[1]).startswith(b"HTTP/1.1 200"), "and the server keeps serving"
