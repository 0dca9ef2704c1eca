"""Running ``osmo serve``: the WSGI app (``app.py``) under waitress, and the lease keeper.

waitress is an optional dependency (``osmo-store[server]``), imported when a server is
built, so importing this module costs nothing without it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import OsmoError
from ..repo import Repository
from .app import make_app
from .protocol import DEFAULT_MAX_BODY

#: a writer lease unused this long is let go (see _keep_leases_short)
IDLE_LEASE_S = 600.0


def _waitress() -> Any:
    try:
        import waitress
        from waitress import wasyncore
    except ImportError:
        raise OsmoError(
            "osmo serve needs the waitress package", hint="pip install 'osmo-store[server]'"
        ) from None
    return waitress, wasyncore


class HttpServer:
    """``app`` bound to ``host:port`` under waitress (``port`` 0: a free port). ``run()``
    serves in the calling thread until ``stop()`` is called from another thread, or a
    KeyboardInterrupt (SIGINT; the CLI maps SIGTERM to it too) reaches it."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = 8,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        waitress, self._wasyncore = _waitress()
        self._map: dict[int, Any] = {}
        self._server = waitress.create_server(
            app,
            map=self._map,
            host=host,
            port=port,
            threads=threads,
            ident="osmo",
            # waitress buffers a whole body before the app sees it and answers bodies over
            # its own limit with plain text; the slack lets the app answer (in JSON) for
            # bodies a little over max_body, and still bounds what is buffered.
            max_request_body_size=max_body + 2**20,
            asyncore_use_poll=True,
        )
        listening = getattr(self._server, "effective_listen", None) or [
            (self._server.effective_host, self._server.effective_port)
        ]
        bound_host, self.port = listening[0][0], int(listening[0][1])
        self.host = str(bound_host)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown()
            self._wasyncore.close_all(self._map)
            self._stopped.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (from any thread but the serving one, not from a signal handler)
        and wait for ``run()`` to return."""
        if self._stopped.is_set():
            return
        # The closing runs in the loop's own thread: the socket map is not thread-safe.
        # OSError: the loop is closing already (its trigger is gone).
        with contextlib.suppress(OSError):
            self._server.trigger.pull_trigger(lambda: self._wasyncore.close_all(self._map))
        self._stopped.wait(timeout)


def serve(
    repo: Repository,
    host: str,
    port: int,
    *,
    token: str | None,
    read_only: bool = False,
    append_only: bool = False,
    threads: int = 8,
    max_body: int = DEFAULT_MAX_BODY,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``repo`` until interrupted (KeyboardInterrupt). ``ready`` is called with the
    server's URL once it is listening (with ``port`` 0, that is how to learn the port)."""
    app = make_app(
        repo, token=token, read_only=read_only, append_only=append_only, max_body=max_body
    )
    server = HttpServer(app, host, port, threads=threads, max_body=max_body)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_leases_short, args=(repo, stop), daemon=True)
    keeper.start()
    if ready is not None:
        ready(server.url)
    try:
        server.run()
    finally:
        stop.set()


def _keep_leases_short(repo: Repository, stop: threading.Event) -> None:
    """Let go of the writer lease once pushes stop coming, so gc is not pinned by a server
    that runs for months. Ten minutes covers a push's upload-then-ref-update sequence."""
    if not repo.objects.has_leases:
        return
    while not stop.wait(30.0):
        repo.objects.release_idle_lease(IDLE_LEASE_S)
