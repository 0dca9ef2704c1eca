"""A newer osmo (a new key schema) finding runs of the same eval recorded by an older one
says so once, before anything runs, and lets the user adopt them or compute them anew: it
never re-runs or reuses them silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmo_store.eval import config as config_module
from osmo_store.eval import explain, upgrade  # noqa: F401 - imported before the schema is patched
from osmo_store.testing.mockserver import MockServer

from .evalproject import ROWS, default_rows, forget_modules_under, make_runner, write_rows


@pytest.fixture(scope="module")
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def osmo_eval(tmp_path: Path, store_path: Path, server, capsys, monkeypatch):
    write_rows(tmp_path / "data.jsonl", default_rows())
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    yield make_runner(store_path, server, tmp_path, capsys)
    forget_modules_under(tmp_path)


@pytest.fixture
def recorded_by_older_osmo(osmo_eval, monkeypatch):
    """The eval as the osmo of key schema 1 recorded it."""
    with monkeypatch.context() as m:
        m.setattr(config_module, "KEY_SCHEMA_VERSION", config_module.KEY_SCHEMA_VERSION - 1)
        old = osmo_eval("--n", "2")
    assert old.code == 0 and old.calls == 2 * ROWS
    return old


def test_the_upgrade_is_said_once_before_running(osmo_eval, recorded_by_older_osmo) -> None:
    asked = osmo_eval("--n", "2")
    assert asked.code == 1 and asked.calls == 0
    assert f"{2 * ROWS} runs of this eval were recorded by an older osmo (key schema 1" in asked.err
    assert recorded_by_older_osmo.config_id[:12] in asked.err
    assert "--adopt-old-keys" in asked.err and "--recompute" in asked.err
    assert "Traceback" not in asked.err
    # Explain says it too, running nothing.
    explained = osmo_eval("explain", "--n", "2")
    assert explained.body["nearest"]["compute"] == ["key schema 1 -> 2"]


def test_adopting_reuses_the_old_runs_as_they_are(osmo_eval, recorded_by_older_osmo) -> None:
    adopted = osmo_eval("--n", "2", "--adopt-old-keys")
    assert adopted.code == 0, adopted.err
    assert adopted.calls == 0 and adopted.body["session"]["reused_samples"] == 2 * ROWS
    assert adopted.config_id != recorded_by_older_osmo.config_id
    assert adopted.body["summary"]["metrics"] == recorded_by_older_osmo.body["summary"]["metrics"]
    # Once chosen, never asked again.
    again = osmo_eval("--n", "2")
    assert again.code == 0 and again.calls == 0 and again.rescored == 0


def test_recompute_computes_anew_and_is_not_asked_again(osmo_eval, recorded_by_older_osmo) -> None:
    fresh = osmo_eval("--n", "2", "--recompute")
    assert fresh.code == 0 and fresh.calls == 2 * ROWS
    again = osmo_eval("--n", "2")
    assert again.code == 0 and again.calls == 0


def test_another_command_is_not_asked_about(osmo_eval, recorded_by_older_osmo) -> None:
    other = osmo_eval("--n", "1")
    assert other.code == 0 and other.calls == ROWS


def test_under_a_model_id_a_moved_endpoint_is_still_the_same_command(
    osmo_eval, monkeypatch, server
) -> None:
    with monkeypatch.context() as m:
        m.setattr(config_module, "KEY_SCHEMA_VERSION", config_module.KEY_SCHEMA_VERSION - 1)
        assert osmo_eval("--model-id", "mine").code == 0
    moved = server.base_url.replace("127.0.0.1", "localhost")
    asked = osmo_eval("--model-id", "mine", base_url=moved)
    assert asked.code == 1 and asked.calls == 0 and "--adopt-old-keys" in asked.err
