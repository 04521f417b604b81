"""What the lean model server and the router share as HTTP servers facing clients they do not control.

Standard library only (the router runs without NumPy or pandas):

- :class:`BoundedServer`: a threading HTTP server with the kernel's full listen backlog (the standard library
  asks for 5, and a burst of new connections beyond it has its SYNs dropped: each such client waits a second or
  more for a retry), and at most ``max_threads`` handler threads. A connection beyond that waits in the backlog
  for a free thread rather than starting one more: a flood of connections costs queueing, never unbounded
  threads.
- :class:`LimitedBodyHandler`: a request handler that closes a kept-alive connection idle for ``idle_timeout_s``
  (an idle flood frees its threads), and reads a body only when its size is known and bounded: a plain decimal
  Content-Length of at most ``max_body_bytes``, all of it within ``body_timeout_s`` (a client that stops sending,
  or trickles a byte at a time, is cut off). Anything else gets a 4xx in JSON and a closed connection: 411
  chunked, 400 a malformed length, 413 too large, 408 too slow.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY_BYTES = 1 << 20   # 1 MiB: a few thousand rows; a bigger batch belongs in a batch job, not a request
BODY_TIMEOUT_S = 10.0      # for the whole body: 1 MiB at 100 kB/s; on loopback it takes milliseconds
IDLE_TIMEOUT_S = 30.0      # a kept-alive connection with no new request for this long is closed
MAX_THREADS = 128          # handler threads at once; the load tests of the book use at most 32 clients


def listen_backlog() -> int:
    """The kernel's limit on pending connections (Linux: net.core.somaxconn; it caps any larger request)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return socket.SOMAXCONN


class BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the full backlog and at most ``max_threads`` handler threads."""

    daemon_threads = True
    request_queue_size = listen_backlog()

    def __init__(self, address, handler, max_threads: int = MAX_THREADS):
        self._slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        self._slots.acquire()              # wait for a free thread; meanwhile new connections queue in the backlog
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def error_body(code: str, message: str) -> bytes:
    """MLflow's error shape, which both servers answer with."""
    return json.dumps({"error_code": code, "message": message}).encode()


class LimitedBodyHandler(BaseHTTPRequestHandler):
    """A handler whose connections idle out and whose bodies are bounded in size and time (see the module)."""

    protocol_version = "HTTP/1.1"      # keep-alive: a router or client reuses one connection per thread
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout_s: float = BODY_TIMEOUT_S
    timeout = IDLE_TIMEOUT_S           # StreamRequestHandler: the socket's timeout while waiting for a request

    def setup(self):
        super().setup()
        # Headers and body are two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request whose body is not read, and close: the rest of the stream cannot be trusted."""
        self.close_connection = True
        self.send_json(status, error_body(code, message), {"Connection": "close"})

    def read_body(self) -> bytes | None:
        """The request body; None once a 4xx has been sent and the connection marked for closing."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.refuse(411, "LENGTH_REQUIRED", "send the body with a Content-Length, not chunked")
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not re.fullmatch(r"[0-9]+", declared):
            return self.refuse(400, "BAD_REQUEST", f"Content-Length must be a non-negative integer, "
                                                   f"got {declared[:40]!r}")
        if int(declared) > self.max_body_bytes:
            return self.refuse(413, "PAYLOAD_TOO_LARGE", f"the body has {declared[:40]} bytes; this server "
                                                         f"accepts at most {self.max_body_bytes}")
        try:
            return self._read_within_deadline(int(declared))
        except TimeoutError:
            return self.refuse(408, "REQUEST_TIMEOUT", f"the body did not arrive within {self.body_timeout_s:g} s")
        except ConnectionError:            # the client hung up mid-body: nobody to answer
            self.close_connection = True
            return None

    def _read_within_deadline(self, length: int) -> bytes:
        """``length`` bytes, all of them by one deadline, so a client trickling bytes is cut off too."""
        deadline = time.monotonic() + self.body_timeout_s
        chunks, remaining = [], length
        try:
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    raise ConnectionError("the client closed the connection mid-body")
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            self.connection.settimeout(self.timeout)   # back to waiting (at most idle_timeout) for the next request
        return b"".join(chunks)
