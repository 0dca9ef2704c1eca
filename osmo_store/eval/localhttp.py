"""A small HTTP/1.1 server on 127.0.0.1 for the eval's recording endpoint.

One thread per connection, keep-alive, each request read with its ``Content-Length`` body
and answered in one write. ``http.server`` would do: but it parses headers with the email
package and writes the status, the headers and the body apart (each write a hand-off of the
interpreter lock to the agent thread waiting on it), which tripled the endpoint's CPU per
call; the endpoint's callers are SDK clients on this machine, which need none of the rest.
A chunked request body is refused (411): SDK clients send a length.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

_MAX_LINE = 65536
_MAX_HEADERS = 100
_MAX_BODY = 1 << 30  # a request body (an embeddings batch can be large)
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = {}


#: (method, target, headers with lower-case names, body) to the reply
Dispatch = Callable[[str, str, Mapping[str, str], bytes], Reply]


class LocalHTTPServer(socketserver.ThreadingTCPServer):
    """Serves ``dispatch`` on an ephemeral port of 127.0.0.1 once ``serve_forever`` runs.
    ``close`` ends every connection and joins every thread the server started."""

    # Connection threads are joined by server_close: an eval leaves no thread of its own.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 1024  # dozens of rollouts connect at once

    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Connection)
        self.port = int(self.server_address[1])
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"osmo-endpoint-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def forget(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # An agent that gave up mid-answer makes the write fail: expected, not worth stderr.
        log.debug("endpoint: error serving %s", client_address, exc_info=True)

    def close(self) -> None:
        self.shutdown()
        # Wake the threads waiting on idle keep-alive connections, so the join is quick.
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()  # joins the connection threads (block_on_close)
        self._thread.join()


class _Connection(socketserver.StreamRequestHandler):
    # Small answers to a client waiting for them: with Nagle on, its delayed ACK would add
    # ~40 ms to some.
    disable_nagle_algorithm = True
    server: LocalHTTPServer

    def handle(self) -> None:
        while self._serve_one():
            pass

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.forget(self.connection)

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
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            return False  # the client went away
        keep = parts[2] == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
        reply = self.server.dispatch(
            parts[0].decode("latin-1"), parts[1].decode("latin-1"), headers, body
        )
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
        self.wfile.write(head + reply.body)
