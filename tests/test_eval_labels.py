"""`osmo eval cache ls` tells configs of one dataset apart: eval functions, n, the sampling
parameters that differ, and a label (`osmo eval --label`, `osmo eval label`). The installed
CLI in a subprocess against the mock model server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from osmo_store.testing.mockserver import MockServer


def osmo(project: Path, *argv: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "osmo"), "--store", str(project / "store"), *argv]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    rows = [{"user_prompt": f"What is {i} + 1?", "ground_truth": str(i + 1)} for i in range(4)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
        "def other(solution_str, ground_truth, extra_info):\n"
        "    return 1\n"
    )
    return tmp_path


def run_eval(project: Path, srv: MockServer, *extra: str) -> str:
    done = osmo(project, "eval", "-d", "data.jsonl", "--model", "m", "--model-id", "m",
                "--base-url", srv.base_url, "-q", "--json", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["config_id"]


def ls(project: Path, *extra: str) -> list[list[str]]:
    done = osmo(project, "eval", "cache", "ls", *extra)
    assert done.returncode == 0, done.stderr
    # columns are two or more spaces apart; no cell holds two spaces in a row
    return [re.split(r" {2,}", line.strip()) for line in done.stdout.splitlines()]


def test_configs_of_one_dataset_are_told_apart(project) -> None:
    with MockServer() as srv:
        cold = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--temperature", "0")
        warm = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--temperature", "0.7",
                        "--n", "2", "--label", "warm")  # fmt: skip
        both = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--eval-fn", "fns.py:other",
                        "--temperature", "0")  # fmt: skip
    table = ls(project)
    header = table[0]
    assert header[:6] == ["CONFIG", "LABEL", "MODEL", "DATASET", "EVAL FNS", "N"]
    assert header[6] == "PARAMS"  # temperature differs; nothing else does
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in table[1:]}
    assert rows[warm[:12]]["LABEL"] == "warm" and rows[cold[:12]]["LABEL"] == "-"
    assert rows[warm[:12]]["N"] == "2" and rows[cold[:12]]["N"] == "1"
    assert rows[warm[:12]]["PARAMS"] == "temperature=0.7"
    assert rows[cold[:12]]["PARAMS"] == "temperature=0.0"
    assert rows[both[:12]]["EVAL FNS"] == "exact,other"
    listed = json.loads(osmo(project, "eval", "cache", "ls", "--json").stdout)
    by_id = {c["config_id"]: c for c in listed}
    assert by_id[warm]["label"] == "warm" and by_id[warm]["params"] == {"temperature": 0.7}
    assert by_id[both]["eval_fns"] == ["exact", "other"] and by_id[both]["n"] == 1


def test_a_label_is_set_kept_filtered_and_removed(project) -> None:
    with MockServer() as srv:
        a = run_eval(project, srv, "--eval-fn", "fns.py:exact")
        b = run_eval(project, srv, "--eval-fn", "fns.py:other", "--eval-fn", "fns.py:exact")
        done = osmo(project, "eval", "label", a[:8], "baseline")
        assert done.returncode == 0 and f"config {a[:12]} labelled 'baseline'" in done.stdout
        # A later run of the config keeps its name.
        assert run_eval(project, srv, "--eval-fn", "fns.py:exact") == a
    assert [r[0] for r in ls(project, "--label", "BASE")[1:]] == [a[:12]]
    assert len(ls(project)) == 3
    shown = osmo(project, "eval", "show", a[:8]).stdout
    assert "label baseline" in shown.splitlines()[0]
    diff = osmo(project, "eval", "diff", a[:8], b[:8]).stdout
    assert diff.startswith(f"A  {a[:12]}  baseline")
    assert osmo(project, "eval", "label", a[:8], "").returncode == 0
    assert ls(project, "--label", "base")[1:] == []
    bad = osmo(project, "eval", "label", a[:8], "two\nlines")
    assert bad.returncode == 1 and "one line" in bad.stderr


def test_diff_pairs_runs_by_index_and_counts_the_rest(project) -> None:
    with MockServer() as srv:
        one = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--temperature", "0.5")
        three = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--temperature", "0.5",
                         "--n", "3")  # fmt: skip
    done = osmo(project, "eval", "diff", one[:8], three[:8], "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["pairs"] == 4 and r["unpaired_runs"] == {"a": 0, "b": 8}
    assert r["difference"] == 0 and r["ci"] == [0, 0] and r["test"]["p_value"] == 1.0
    text = osmo(project, "eval", "diff", one[:8], three[:8]).stdout
    assert "no partner (n differs): 0 in A, 8 in B" in text and "no row's exact changed" in text


def test_a_label_names_its_config_wherever_a_config_is_taken(project, monkeypatch) -> None:
    with MockServer() as srv:
        a = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--label", "baseline")
        b = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--temperature", "0.9",
                     "--label", "candidate")  # fmt: skip
        c = run_eval(project, srv, "--eval-fn", "fns.py:exact", "--temperature", "0.3")
    refused = osmo(project, "eval", "label", c[:8], "candidate")
    assert refused.returncode == 1 and b[:12] in refused.stderr
    # As a store labelled before a label was kept to one config holds it.
    from osmo_store import Repository
    from osmo_store.eval import catalog

    monkeypatch.setattr(catalog, "check_label_free", lambda *args: None)
    with Repository.open(project / "store") as repo:
        catalog.set_label(repo, c, "candidate")
    shown = osmo(project, "eval", "show", "baseline", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["config_id"] == a
    # Two configs of one name: the name alone says too little, and the error says which.
    both = osmo(project, "eval", "diff", "baseline", "candidate")
    assert both.returncode == 1 and b[:12] in both.stderr and c[:12] in both.stderr
    named = osmo(project, "eval", "diff", "baseline", b[:8])
    assert named.returncode == 0, named.stderr
    missing = osmo(project, "eval", "show", "nobody")
    assert missing.returncode == 1 and "no eval config matches 'nobody'" in missing.stderr


def test_a_too_short_id_prefix_says_so(project) -> None:
    """Three hex characters match nothing (a prefix needs four, as for `osmo ls-tree`): the
    error says so rather than that no config exists. A label that short still names its
    config."""
    with MockServer() as srv:
        a = run_eval(project, srv, "--eval-fn", "fns.py:exact")
        b = run_eval(project, srv, "--eval-fn", "fns.py:other", "--label", "f00")
    for argv in (["show", a[:3]], ["report", a[:3], "-o", "r.html"], ["export", a[:3], "-o",
                 "x.csv"], ["show", a[:3].upper()]):  # fmt: skip
        done = osmo(project, "eval", *argv)
        assert done.returncode == 1, argv
        assert done.stderr == (f"osmo: error: no eval config matches {argv[1]!r}\n"
                               "hint: an id prefix needs at least 4 hex characters\n")  # fmt: skip
    named = osmo(project, "eval", "show", "f00", "--json")
    assert named.returncode == 0 and json.loads(named.stdout)["config_id"] == b
    other = osmo(project, "eval", "show", "xyz")  # not hex: no word about prefixes
    assert other.returncode == 1 and "4 hex" not in other.stderr
