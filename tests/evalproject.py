"""A small eval project in a temporary folder and a way to run ``osmo eval --json`` on it
in-process, as the cache-key tests need: a finished config, one change, a re-run, and the
re-run's model calls and rescorings read from its JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osmo_store.cli.main import main
from osmo_store.testing.mockserver import MockServer

ROWS = 6


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def default_rows(count: int = ROWS) -> list[dict]:
    return [
        {"user_prompt": f"What is {i} + {i + 1}?", "ground_truth": str(2 * i + 1), "topic": "add"}
        for i in range(count)
    ]


#: fns.py of the project: the exact-match eval function
EXACT_FN = (
    "def exact(solution_str, ground_truth, extra_info):\n"
    "    return solution_str.strip() == ground_truth\n"
)


def lay_out_project(folder: Path, monkeypatch: Any) -> Path:
    """``data.jsonl`` (the default rows) and ``fns.py`` in ``folder``, made the working
    directory, with the recorder in the eval's process (no process per eval: faster).
    The caller forgets the folder's modules afterwards (``forget_modules_under``)."""
    write_rows(folder / "data.jsonl", default_rows())
    (folder / "fns.py").write_text(EXACT_FN)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    return folder


def forget_modules_under(folder: Path) -> None:
    """Drop the modules imported from ``folder`` so the next in-process eval imports the
    user's files as they are now, as a new ``osmo`` process would."""
    root = str(folder.resolve())
    for name, module in list(sys.modules.items()):
        f = getattr(module, "__file__", None)
        if f and str(Path(f).resolve()).startswith(root):
            del sys.modules[name]


@dataclass
class Rerun:
    """What one ``osmo eval --json`` did: model calls seen by the server, and from its JSON
    the rollouts rescored (reused from the store) and the runs computed."""

    code: int
    calls: int
    body: dict[str, Any] | None
    err: str

    @property
    def rescored(self) -> int:
        assert self.body is not None, self.err
        return self.body["session"]["reused_rollouts"]

    @property
    def computed(self) -> int:
        assert self.body is not None, self.err
        return self.body["session"]["computed"]

    @property
    def config_id(self) -> str:
        assert self.body is not None, self.err
        return self.body["config_id"]


def make_runner(store: Path, server: MockServer, project: Path, capsys) -> Callable[..., Rerun]:
    def run(
        *argv: str,
        model: str | None = "mock",
        base_url: str | None = None,
        fns: tuple[str, ...] = ("fns.py:exact",),
        data: str = "data.jsonl",
    ) -> Rerun:
        forget_modules_under(project)
        # ``explain`` (the eval's sub-command) comes right after ``eval``.
        sub = [argv[0]] if argv[:1] == ("explain",) else []
        argv = argv[len(sub) :]
        args = ["--store", str(store), "eval", *sub, "-d", data, "-q", "--json"]
        args += ["--max-retries", "0"]
        if model is not None:
            args += ["--model", model, "--base-url", base_url or server.base_url]
        for f in fns:
            args += ["--eval-fn", f]
        before = server.calls
        code = main([*args, *argv])
        captured = capsys.readouterr()
        body = json.loads(captured.out) if code == 0 else None
        return Rerun(code, server.calls - before, body, captured.err)

    return run
