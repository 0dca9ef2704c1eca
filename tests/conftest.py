from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from osmo_store import Repository

# The tests of Ctrl-C need Python's own SIGINT handler, here and (inherited as the default
# action) in the processes they start. A suite started in the background by a script
# (`make test &`) inherits SIGINT ignored: interrupt_main() then does nothing, and a
# SIGINT sent to `osmo serve` is lost (seen as 3 failures of a loaded stability run).
signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis fails an example that takes over 200 ms by default: a timed assertion, which a
# loaded machine breaks (test_canonical_json_writes_non_ascii_as_itself failed so, 392 ms).
# A slow machine is slow, not wrong; every property test runs without a deadline.
settings.register_profile("osmo", deadline=None)
settings.load_profile("osmo")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run the slow reliability tier")


def pytest_configure(config: pytest.Config) -> None:
    from . import fuzzing

    fuzzing.slow = _slow_tier(config)


def _slow_tier(config: pytest.Config) -> bool:
    return bool(config.getoption("--runslow") or os.environ.get("OSMO_SLOW") == "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_tier(config):
        return
    skip = pytest.mark.skip(reason="slow tier: use --runslow or OSMO_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's store or settings."""
    for key in list(os.environ):
        if key.startswith("OSMO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    # Tests make stores on the fly with --store PATH; a test of the check unsets this.
    monkeypatch.setenv("OSMO_CREATE", "1")


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def repo(store_path: Path):
    r = Repository.open(store_path)
    yield r
    r.close()


@pytest.fixture
def osmo_cmd() -> list[str]:
    """Command prefix that runs the installed CLI in a real subprocess."""
    return [sys.executable, "-m", "osmo_store.cli"]


@pytest.fixture
def osmo_bin() -> str:
    """The installed `osmo` console script of this environment."""
    exe = Path(sys.executable).parent / "osmo"
    if not exe.exists():
        pytest.fail(f"`osmo` is not installed next to {sys.executable}: pip install -e .")
    return str(exe)
