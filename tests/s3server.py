"""A real moto S3 server in a subprocess, for the S3 backend's tests (not collected: the
file name does not start with ``test_``).

Run as a script (``python tests/s3server.py PORT``) it serves moto's own WSGI app -- the one
``python -m moto.server`` serves -- with one difference: requests are handled one at a
time. moto checks ``If-Match`` / ``If-None-Match`` and then writes in two steps without a
lock, so with its threaded server two conditional writes can both pass the check (seen
once in about 1,000 eight-way create races: two winners). Real S3 makes the check and the
write one atomic step; serialising requests gives moto that property too, and compare-and-
swap tests then test our code, not moto's race.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

HOST = "127.0.0.1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


class MotoServer:
    """``with MotoServer() as server:`` a moto S3 endpoint at ``server.url``."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        # One session for every client: loading the service model once, not per client.
        self._session = boto3.session.Session()
        self._admin: Any = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        for _ in range(3):  # the free port we picked may be taken before the server binds it
            self.port = _free_port()
            env = {**os.environ, **DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": REGION}
            self._proc = subprocess.Popen(
                [sys.executable, __file__, str(self.port)],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env,
            )  # fmt: skip
            if self._wait_ready(timeout):
                return
        self.stop()
        self._log.seek(0)
        tail = self._log.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"moto server did not start:\n{tail}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        client = self.client(retries={"total_max_attempts": 1})
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                client.list_buckets()
            except Exception:  # noqa: BLE001 - not up yet: connection refused, 5xx...
                time.sleep(0.05)
                continue
            return True
        self._proc.kill()
        self._proc.wait()
        return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server with dummy credentials (the environment is
        not consulted for them); ``config`` overrides botocore Config settings."""
        return self._session.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
            config=Config(**{"retries": {"mode": "standard", "total_max_attempts": 2}, **config}),
        )

    def new_bucket(self) -> str:
        name = f"osmo-{uuid.uuid4().hex[:16]}"
        if self._admin is None:
            self._admin = self.client()
        self._admin.create_bucket(Bucket=name)
        return name

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def moto_server_fixture(scope: str = "module") -> Callable[[], Iterator[MotoServer]]:
    """A fixture (``moto = moto_server_fixture()`` in a test module) giving one running
    server for the whole ``scope``; give each test its own bucket or prefix."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def server() -> Iterator[MotoServer]:
        with MotoServer() as s:
            yield s

    return server


def aws_env_fixture() -> Callable[..., Path]:
    """A fixture that gives a test the AWS environment of a machine with only dummy
    credentials: no profile, no endpoint, no config files, no instance metadata lookups."""

    @pytest.fixture
    def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
        for key in list(os.environ):
            if key.startswith("AWS_"):
                monkeypatch.delenv(key)
        for key, value in DUMMY_CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        return tmp_path

    return aws_env


class _OneAtATime:
    """A WSGI app wrapper that handles one request at a time (the body is produced in full
    inside the lock)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


def serve(port: int) -> None:
    """What ``moto.server.main`` does, with requests serialised (see the module docstring)."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = _OneAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(HOST, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
