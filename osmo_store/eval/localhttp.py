"""A small HTTP/1.1 server on 127.0.0.1 for the eval's recording endpoint.

Keep-alive, each request read with its ``Content-Length`` body and answered in one write.
``http.server`` would do: but it parses headers with the email package and writes the
status, the headers and the body apart (each write a hand-off of the interpreter lock to the
agent thread waiting on it), which tripled the endpoint's CPU per call; the endpoint's
callers are SDK clients on this machine, which need none of the rest. A chunked request body
is refused (411): SDK clients send a length.

A connection is served by the thread that accepted it, from a pool of threads waiting in
``accept`` (one more is started when the last waiting one takes a connection; a thread
whose connection closes waits again). ``socketserver`` accepts on a thread of its own and
starts a thread per connection: a hand-off and a thread start (which waits for the new
thread to run) on the interpreter lock in each new connection's first call, and an agent's
HTTP pool reconnects whenever its keep-alive expires (httpx's after 5 s idle).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import BinaryIO, NamedTuple

log = logging.getLogger(__name__)

_MAX_LINE = 65536
_MAX_HEADERS = 100
_MAX_BODY = 1 << 30  # a request body (an embeddings batch can be large)
_BACKLOG = 1024  # dozens of rollouts connect at once
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = {}


#: (method, target, headers with lower-case names, body) to the reply
Dispatch = Callable[[str, str, Mapping[str, str], bytes], Reply]


class LocalHTTPServer:
    """Serves ``dispatch`` on an ephemeral port of 127.0.0.1 from the start. ``close`` ends
    every connection and joins every thread the server started."""

    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=_BACKLOG)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._waiting = 0  # threads in accept (or about to be)
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._closed = False
        with self._lock:
            self._start_thread()

    def _start_thread(self) -> None:
        """One more thread waiting for a connection (called with the lock held)."""
        self._waiting += 1
        # Daemon threads, joined by close: an eval aborted without closing its endpoint
        # must not be kept from exiting by a thread waiting in accept.
        thread = threading.Thread(
            target=self._serve, name=f"osmo-endpoint-{self.port}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                with self._lock:
                    if self._closed:
                        self._waiting -= 1
                        return
                # Out of descriptors, say: wait for some to be freed, and try again.
                log.debug("endpoint: accept failed", exc_info=True)
                time.sleep(0.05)
                continue
            with self._lock:
                self._waiting -= 1
                if self._closed:
                    conn.close()
                    return
                self._connections.add(conn)
                if not self._waiting:
                    self._start_thread()
            try:
                # Small answers to a client waiting for them: with Nagle on, its delayed
                # ACK would add ~40 ms to some.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _Connection(self.dispatch, conn).serve()
            except OSError:  # an agent that gave up mid-answer makes the write fail
                log.debug("endpoint: a connection failed", exc_info=True)
            except Exception:  # a bug: one connection's failure, not the server's
                log.warning("endpoint: error serving a connection", exc_info=True)
            finally:
                with self._lock:
                    self._connections.discard(conn)
                    closed = self._closed
                    if not closed:
                        self._waiting += 1
                with contextlib.suppress(OSError):  # the answer first, then the end (FIN)
                    conn.shutdown(socket.SHUT_WR)
                conn.close()
            if closed:
                return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections = list(self._connections)
            threads = list(self._threads)
        # Wakes the threads in accept (EINVAL on Linux), and those waiting on idle
        # keep-alive connections, so the join is quick.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join()


class _Connection:
    """One client's connection: its requests, one after another."""

    def __init__(self, dispatch: Dispatch, conn: socket.socket) -> None:
        self.dispatch = dispatch
        self.conn = conn
        self.rfile: BinaryIO = conn.makefile("rb")

    def serve(self) -> None:
        with self.rfile:
            while self._serve_one():
                pass

    def _serve_one(self) -> bool:
        """Read one request and answer it; False when the connection is to be closed."""
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            return False
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return self._fail(400, "malformed request line")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            header = self.rfile.readline(_MAX_LINE + 1)
            if header in (b"\r\n", b"\n", b""):
                break
            name, colon, value = header.partition(b":")
            if not colon:
                return self._fail(400, "malformed header")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        else:
            return self._fail(431, "too many headers")
        if "transfer-encoding" in headers:
            return self._fail(411, "send the body with a Content-Length")
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            return self._fail(400, "malformed Content-Length")
        if not 0 <= length <= _MAX_BODY:
            return self._fail(413, "request body too large")
        if headers.get("expect", "").lower() == "100-continue":  # curl, for bodies > 1 KB
            self.conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            return False  # the client went away
        keep = parts[2] == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
        reply = self.dispatch(parts[0].decode("latin-1"), parts[1].decode("latin-1"), headers, body)
        self._write(reply, close=not keep)
        return keep

    def _fail(self, status: int, message: str) -> bool:
        self._write(Reply(status, message.encode(), "text/plain; charset=utf-8"), close=True)
        return False

    def _write(self, reply: Reply, *, close: bool) -> None:
        lines = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.conn.sendall(head + reply.body)
