"""What a hostile remote can make osmo allocate: an HTTP server's endless id line is
refused in one line naming the server, long before the bytes it sends are read."""

from __future__ import annotations

import json
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from osmo_store.errors import RemoteError
from osmo_store.http import protocol as wire
from osmo_store.http.client import open_http_remote

#: what the hostile server sends at most before it gives up: the client must fail long before
_SERVER_CAP = 64 * 2**20
#: what a failing client may have made the server send, socket buffers included
_SENT_BOUND = 8 * 2**20


# --- an HTTP server's endless line ---------------------------------------------------------


class _EndlessLineServer:
    """A real HTTP server on 127.0.0.1 that answers ``/v1/info`` as an osmo server does and
    ``GET /v1/objects`` with one line that never ends (stopping at ``_SERVER_CAP``)."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection does

            def do_GET(self) -> None:
                if self.path == wire.API_PREFIX + wire.INFO:
                    body = json.dumps({"server": wire.SERVER_NAME, "store_format": 1}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", wire.JSON_TYPE)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", wire.ID_LIST_TYPE)
                self.end_headers()
                piece = b"ab" * 2**15
                try:
                    while owner.sent < _SERVER_CAP:
                        self.wfile.write(piece)
                        owner.sent += len(piece)
                except OSError:
                    pass  # the client hung up: what the test wants
                finally:
                    owner.done.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_an_endless_id_line_is_refused_after_a_few_bytes() -> None:
    server = _EndlessLineServer()
    objects, _ = open_http_remote(server.url, None)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteError) as caught:
            list(objects.iter_ids())
        peak = tracemalloc.get_traced_memory()[1]
        objects.close()  # the client's side of the connection goes: the server sees it
        assert server.done.wait(60), "the server never stopped sending"
    finally:
        tracemalloc.stop()
        server.close()
    message = str(caught.value)
    assert server.url in message and "\n" not in message, message
    assert server.sent < _SENT_BOUND, server.sent
    assert peak < 4 * 2**20, peak
    assert "line" in message, message
