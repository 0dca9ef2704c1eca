"""The mutation matrix: one change at a time to a finished eval, then the same command again,
asserting both sides of the cache: how many model calls the re-run makes (counted at the mock
server) and how many stored rollouts it rescores (from ``--json``). A call too few is a wrong
hit (a stale answer); a call too many is a spurious miss (money spent for nothing).

The baseline: 6 rows, ``--n 2`` at temperature 0.5 (12 runs), an eval function that imports a
helper module, an agent that imports a prompt module, a re-exported eval function, one named
through a package ``__init__``, and one that imports an installed package."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from osmo_store.testing.mockserver import MockServer

from .evalproject import default_rows, forget_modules_under, make_runner, write_rows

BASE = ("--n", "2", "--temperature", "0.5")
RUNS = 12  # 6 rows x 2 samples


@pytest.fixture(scope="module")
def server():
    with MockServer() as srv:
        yield srv


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


EXACT = (
    "def exact(solution_str, ground_truth, extra_info):\n"
    "    return solution_str.strip() == ground_truth\n"
)


def _fake_dist(site: Path, version: str) -> None:
    for old in site.glob("fakepkg-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"fakepkg-{version}.dist-info"
    _write(info / "METADATA", f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    _write(info / "top_level.txt", "fakepkg\n")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    p = tmp_path / "proj"
    p.mkdir()
    write_rows(p / "data.jsonl", default_rows())
    _write(p / "grading.py", "def normalize(s):\n    return s.strip()\n")
    _write(
        p / "fns.py",
        "from grading import normalize\n\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return normalize(solution_str) == ground_truth\n",
    )
    _write(p / "more.py", "def length(solution_str, ground_truth, extra_info):\n    return 1.0\n")
    _write(p / "prompts.py", "TEMPLATE = '{q}'\n")
    _write(
        p / "agent.py",
        "import prompts\n\n"
        "def solve(messages, row, client):\n"
        "    q = messages[-1]['content']\n"
        "    ask = [{'role': 'user', 'content': prompts.TEMPLATE.format(q=q)}]\n"
        "    return ask + [client.chat(ask)]\n",
    )
    _write(p / "impl.py", EXACT)
    _write(p / "reexport.py", "from impl import exact  # noqa: F401\n")
    _write(p / "scorers" / "__init__.py", "from .impl import exact  # noqa: F401\n")
    _write(p / "scorers" / "impl.py", EXACT)
    _write(p / "unrelated.py", "X = 1\n")
    _write(p / "rubric.txt", "strict\n")
    _write(
        p / "envfn.py",
        "import os\nfrom osmo_store.eval.keys import depends_on\n\n"
        "@depends_on(env=['BONUS'])\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    bonus = float(os.environ.get('BONUS', 0))\n"
        "    return float(solution_str.strip() == ground_truth) + bonus\n",
    )
    site = tmp_path / "venv" / "site-packages"
    _write(site / "fakepkg" / "__init__.py", "SCALE = 1\n")
    _fake_dist(site, "1.0")
    _write(
        p / "pkgfn.py",
        "import fakepkg\n\n"
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return float(solution_str.strip() == ground_truth) * fakepkg.SCALE\n",
    )
    monkeypatch.syspath_prepend(str(site))
    # Recording in the eval's process: 88 evals here, each would start a recorder process.
    monkeypatch.setenv("OSMO_RECORDER", "thread")
    monkeypatch.chdir(p)
    yield p
    forget_modules_under(tmp_path)


def _edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        text = (p / name).read_text()
        assert old in text, (name, old)
        (p / name).write_text(text.replace(old, new))

    return apply


def _rows(change: Callable[[list[dict]], list[dict]]) -> Callable[[Path], None]:
    def apply(p: Path) -> None:
        rows = [json.loads(line) for line in (p / "data.jsonl").read_text().splitlines()]
        write_rows(p / "data.jsonl", change(rows))

    return apply


def _edit_row(rows: list[dict]) -> list[dict]:
    rows[2] = {"user_prompt": "What is 40 + 2?", "ground_truth": "42", "topic": "add"}
    return rows


def _with_system_prompt(text: str) -> Callable[[list[dict]], list[dict]]:
    return lambda rows: [{**r, "system_prompt": text} for r in rows]


@dataclass
class Case:
    """A baseline eval (``before`` flags), a change (to files, and/or flags ``after``), and
    what the re-run must do."""

    calls: int
    rescored: int
    before: tuple[str, ...] = BASE
    after: tuple[str, ...] | None = None  # default: the same flags as before
    change: Callable[[Path], None] | None = None
    fns: tuple[str, ...] = ("fns.py:exact",)
    after_fns: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    after_url: Callable[[str], str] | None = None
    after_model: str = "mock"


AGENT = (*BASE, "--agent", "agent.py:solve")

CASES: dict[str, Case] = {
    "nothing": Case(0, 0),
    "row changed": Case(2, 10, change=_rows(_edit_row)),
    "row added": Case(2, 12, change=_rows(lambda r: [*r, {"user_prompt": "What is 7 * 6?"}])),
    "row removed": Case(0, 10, change=_rows(lambda r: r[:-1])),
    "rows reordered": Case(0, 0, change=_rows(lambda r: r[::-1])),
    "ground truth changed": Case(
        0, 10, change=_rows(lambda r: [{**r[0], "ground_truth": "x"}, *r[1:]])
    ),
    "metadata changed": Case(0, 10, change=_rows(lambda r: [{**r[0], "topic": "sum"}, *r[1:]])),
    "system prompt added": Case(RUNS, 0, change=_rows(_with_system_prompt("Be brief."))),
    "temperature": Case(RUNS, 0, after=("--n", "2", "--temperature", "0.9")),
    "max tokens": Case(RUNS, 0, after=(*BASE, "--max-tokens", "50")),
    "top p": Case(RUNS, 0, after=(*BASE, "--top-p", "0.9")),
    "seed added": Case(RUNS, 0, after=(*BASE, "--seed", "1")),
    "seed changed": Case(RUNS, 0, before=(*BASE, "--seed", "1"), after=(*BASE, "--seed", "2")),
    "model name": Case(RUNS, 0, after_model="mock-2"),
    "endpoint without /v1": Case(0, 0, after_url=lambda u: u.removesuffix("/v1")),
    "endpoint trailing slash": Case(0, 0, after_url=lambda u: u + "/"),
    "endpoint scheme case": Case(0, 0, after_url=lambda u: u.replace("http://", "HTTP://")),
    "endpoint other host": Case(RUNS, 0, after_url=lambda u: u.replace("127.0.0.1", "localhost")),
    "model id names the endpoint": Case(RUNS, 0, after=(*BASE, "--model-id", "mine")),
    "eval fn file": Case(0, RUNS, change=_edit("fns.py", "== ground_truth", "!= ground_truth")),
    "eval fn helper": Case(0, RUNS, change=_edit("grading.py", "s.strip()", "s.strip().lower()")),
    "eval fn comment only": Case(0, 0, change=_edit("fns.py", "\n\ndef", "\n\n# why\ndef")),
    "eval fn helper whitespace only": Case(
        0, 0, change=_edit("grading.py", "return s.strip()", "return  s.strip( )")
    ),
    "unrelated file": Case(0, 0, change=_edit("unrelated.py", "X = 1", "X = 2")),
    "re-exported fn's defining file": Case(
        0,
        RUNS,
        fns=("reexport.py:exact",),
        change=_edit("impl.py", "== ground_truth", "!= ground_truth"),
    ),
    "package __init__": Case(
        0,
        RUNS,
        fns=("scorers:exact",),
        change=_edit("scorers/__init__.py", "# noqa: F401", "# noqa: F401\nVERSION = 2"),
    ),
    "package submodule": Case(
        0,
        RUNS,
        fns=("scorers:exact",),
        change=_edit("scorers/impl.py", "== ground_truth", "!= ground_truth"),
    ),
    "installed package version": Case(
        0,
        RUNS,
        fns=("pkgfn.py:exact",),
        change=lambda p: _fake_dist(p.parent / "venv" / "site-packages", "2.0"),
    ),
    "declared variable set": Case(0, RUNS, fns=("envfn.py:exact",), env={"BONUS": "1"}),
    "declared file": Case(
        0,
        RUNS,
        before=(*BASE, "--key-file", "rubric.txt"),
        change=_edit("rubric.txt", "strict", "lax"),
    ),
    "agent file, same requests": Case(
        0, 0, before=AGENT, change=_edit("agent.py", "import prompts", "import prompts\nV = 2")
    ),
    "agent file, new requests": Case(
        RUNS, 0, before=AGENT, change=_edit("agent.py", "q = messages", "q = 'Q: ' + messages")
    ),
    "agent helper": Case(RUNS, 0, before=AGENT, change=_edit("prompts.py", "'{q}'", "'Q: {q}'")),
    "agent whitespace only": Case(
        0, 0, before=AGENT, change=_edit("agent.py", "import prompts\n", "import prompts\n\n\n")
    ),
    "max turns": Case(0, 0, before=AGENT, after=(*AGENT, "--max-turns", "3")),
    "n up": Case(6, RUNS, after=("--n", "3", "--temperature", "0.5")),
    "n down": Case(0, 6, after=("--n", "1", "--temperature", "0.5")),
    "limit down": Case(0, 6, after=(*BASE, "--limit", "3")),
    "limit up": Case(4, 6, before=(*BASE, "--limit", "3"), after=(*BASE, "--limit", "5")),
    "offset": Case(0, 8, after=(*BASE, "--offset", "2")),
    "eval fn added": Case(0, RUNS, after_fns=("fns.py:exact", "more.py:length")),
    "eval fn removed": Case(
        0, RUNS, fns=("fns.py:exact", "more.py:length"), after_fns=("fns.py:exact",)
    ),
    "eval fn reordered": Case(
        0, 0, fns=("fns.py:exact", "more.py:length"), after_fns=("more.py:length", "fns.py:exact")
    ),
    "pass threshold and concurrency": Case(
        0, 0, after=(*BASE, "--pass-threshold", "0.5", "--concurrency", "3")
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_change_reruns_exactly_what_it_must(
    name: str, server: MockServer, project: Path, store_path: Path, capsys, monkeypatch
) -> None:
    case = CASES[name]
    run = make_runner(store_path, server, project, capsys)
    first = run(*case.before, fns=case.fns)
    assert first.code == 0, first.err
    assert first.body["summary"]["runs"] + first.body["summary"]["failed"] > 0
    if case.change is not None:
        case.change(project)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    after = case.before if case.after is None else case.after
    url = case.after_url(server.base_url) if case.after_url else None
    fns = case.after_fns or case.fns
    explained = run("explain", *after, fns=fns, model=case.after_model, base_url=url)
    assert explained.code == 0 and explained.calls == 0, explained.err
    again = run(*after, fns=fns, model=case.after_model, base_url=url)
    assert again.code == 0, again.err
    assert (again.calls, again.rescored) == (case.calls, case.rescored), again.body["session"]
    # What explain said the run would do is what it did.
    plan = explained.body["plan"]
    assert explained.body["config_id"] == again.config_id
    assert (plan["rescore"], plan["compute"]) == (again.rescored, again.computed)
