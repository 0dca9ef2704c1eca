"""The small HTTP server under the eval's recording endpoint: its threads. Real sockets on
127.0.0.1 and real threads."""

from __future__ import annotations

import socket
import threading

import httpx

from osmo_store.eval.localhttp import LocalHTTPServer, Reply


def test_a_new_connection_is_served_by_a_thread_the_server_has_already() -> None:
    """A connection is served by a thread waiting for one, not by a thread started for it
    after the accept (a hand-off and a thread start in each new connection's first call:
    an agent's pool reconnects when its keep-alive expires)."""
    served: list[threading.Thread] = []

    def dispatch(method: str, target: str, headers: object, body: bytes) -> Reply:
        served.append(threading.current_thread())
        return Reply(200, b"{}")

    server = LocalHTTPServer(dispatch)
    try:
        for _ in range(20):  # one connection after another, each closed before the next
            with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as http:
                assert http.get(f"http://127.0.0.1:{server.port}/").status_code == 200
    finally:
        server.close()
    assert len(served) == 20
    # The thread a closed connection freed serves a later one (a spare or two may join in
    # when a connection comes before the last one's thread is free again).
    assert len({id(t) for t in served}) <= 5


def test_close_ends_every_thread_of_the_server_and_its_connections() -> None:
    before = set(threading.enumerate())
    server = LocalHTTPServer(lambda method, target, headers, body: Reply(200, b"{}"))
    idle = socket.create_connection(("127.0.0.1", server.port))  # kept open by its client
    try:
        with httpx.Client() as http:
            for _ in range(3):
                assert http.get(f"http://127.0.0.1:{server.port}/").status_code == 200
            server.close()
        assert [t for t in threading.enumerate() if t not in before] == []
        assert idle.recv(1) == b""  # the server's end of it is closed
    finally:
        idle.close()
