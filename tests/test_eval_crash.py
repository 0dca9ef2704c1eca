"""Real `osmo eval` subprocesses interrupted mid-run: SIGKILL at random moments and SIGINT.
Afterwards nothing recorded is lost, the store is sound, and re-running the same command
makes exactly the missing model calls."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from osmo_store import Repository
from osmo_store.cli.common import EXIT_ALL_FAILED
from osmo_store.eval.catalog import list_configs
from osmo_store.eval.journal import read_journal
from osmo_store.eval.state import INDEX_REF, ConfigState
from osmo_store.maintenance.fsck import fsck
from osmo_store.testing.mockserver import MockServer
from osmo_store.tree import iter_tree, tree_count

from .waiting import Gate, wait_for_line, wait_until

ROWS = 150


@pytest.fixture
def project(tmp_path: Path) -> Path:
    rows = [{"user_prompt": f"What is {i} * 3?", "ground_truth": str(3 * i)} for i in range(ROWS)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    return tmp_path


def eval_cmd(osmo_bin: str, store: Path, base_url: str) -> list[str]:
    return [
        osmo_bin, "--store", str(store), "eval", "-d", "data.jsonl", "--model", "m",
        "--base-url", base_url, "--eval-fn", "fns.py:exact", "--concurrency", "4", "--json",
    ]  # fmt: skip


def recorded(store: Path) -> tuple[int, str]:
    """Runs recorded in the store (counted in the manifests), and the config's status. The
    run record's own counts must agree with its manifests."""
    with Repository.open(store) as repo:
        configs = list_configs(repo)
        if not configs:
            return 0, "none"
        assert len(configs) == 1
        state = ConfigState.from_run(repo, configs[0].run_id)
        done = state.count(repo, "samples") + state.count(repo, "failed")
        assert configs[0].counts["done"] == done
        return done, configs[0].status


def wait_until_recorded(store: Path, proc: subprocess.Popen) -> None:
    """Wait until the eval has recorded some runs."""
    wait_until(
        lambda: (store / "refs" / "evals").is_dir() and recorded(store)[0] > 0,
        what="the eval recording runs",
        proc=proc,
    )


def start_recording_eval(
    osmo_bin: str,
    store: Path,
    srv: MockServer,
    project: Path,
    args: tuple[str, ...] = (),
    **popen: Any,
) -> subprocess.Popen:
    """An `osmo eval` subprocess (text pipes), returned once it has recorded some runs. To be
    sure it is still running when the test acts, serve it through a ``Gate``."""
    proc = subprocess.Popen([*eval_cmd(osmo_bin, store, srv.base_url), *args], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)  # fmt: skip
    wait_until_recorded(store, proc)
    return proc


def stopped_at_the_gate(proc: subprocess.Popen, gate: Gate) -> str:
    """For an eval sent a stop signal while its model calls are held at ``gate``: open the
    gate once the eval says it is stopping (so the runs in flight finish in its grace period,
    and nothing new starts), wait for its end, and return its stderr."""
    assert proc.stderr is not None
    before = wait_for_line(proc.stderr, proc, "osmo: stopping")
    gate.release()
    _, rest = proc.communicate(timeout=60)
    return "".join(before) + rest


def killed(proc: subprocess.Popen) -> str:
    """SIGKILL ``proc``; its stderr. Fails unless the kill is what ended it (an eval that
    finished first would make the test test nothing)."""
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the eval ended before the kill: {err}"
    return err


def shown_done(stderr: str) -> int:
    """The highest 'N/TOTAL runs' the progress output showed the user."""
    best = 0
    for line in stderr.splitlines():
        if line.startswith("osmo: ") and "/" in line and " runs" in line:
            best = max(best, int(line.split()[1].split("/")[0]))
    return best


def kept(store: Path) -> int:
    """Runs kept by a killed eval: recorded in the store, or in its journal (which the next
    session records before it runs anything)."""
    names: set[str] = set()
    with Repository.open(store) as repo:
        for config in list_configs(repo):
            state = ConfigState.from_run(repo, config.run_id)
            names |= state.names(repo, "samples") | state.names(repo, "failed")
        if repo.layout.journals.is_dir():
            for journal in repo.layout.journals.iterdir():
                names.update(r.name for r in read_journal(journal) if r.name)
    return len(names)


def check_resume(osmo_bin: str, store: Path, project: Path, srv: MockServer) -> None:
    done = kept(store)
    with Repository.open(store) as repo:
        report = fsck(repo)
        assert report.ok, report.problems
    # A killed eval's last requests may still be on their way into the server (read and
    # counted after its death): count from when they all are.
    wait_until(srv.settled, what="the mock server to have read every request sent so far")
    before = srv.calls
    r = subprocess.run(eval_cmd(osmo_bin, store, srv.base_url), cwd=project,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["status"] == "completed" and body["summary"]["runs"] == ROWS
    # Exactly the runs not kept before were made again: nothing recorded or journaled was
    # lost (it would be re-run) and nothing missing was skipped.
    assert srv.calls - before == ROWS - done
    assert body["summary"]["metrics"]["exact"]["mean"] == 1.0


def kill_once(osmo_bin: str, tmp_path: Path, project: Path, srv: MockServer, delay: float) -> None:
    """SIGKILL an eval ``delay`` seconds after it starts: a random instant, from start-up to
    its last commits. The last few model calls are held until the kill, so that it always
    lands before the eval is done, however fast or slow the machine."""
    store = tmp_path / f"store-{delay:.3f}-{random.random()}"
    with Gate(ROWS - 8) as gate:
        srv.responder = gate
        proc = subprocess.Popen(eval_cmd(osmo_bin, store, srv.base_url), cwd=project,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        # A random instant, on purpose: this is the one wait on a clock in the suite.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
        err = killed(proc)
    done, status = recorded(store)
    assert done >= shown_done(err)  # every run shown as completed was recorded
    assert done < ROWS and status in ("interrupted", "none")
    check_resume(osmo_bin, store, project, srv)


def test_sigkill_mid_eval_loses_nothing(osmo_bin: str, tmp_path: Path, project: Path) -> None:
    rng = random.Random(1)
    with MockServer(latency=0.01) as srv:
        for _ in range(3):
            kill_once(osmo_bin, tmp_path, project, srv, rng.uniform(0.4, 1.6))


@pytest.mark.slow
def test_sigkill_many_times(osmo_bin: str, tmp_path: Path, project: Path) -> None:
    rng = random.Random(2)
    with MockServer(latency=0.01) as srv:
        for _ in range(20):
            kill_once(osmo_bin, tmp_path, project, srv, rng.uniform(0.3, 2.0))


def test_sigint_records_finished_runs_and_exits_130(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with Gate(20) as gate, MockServer(responder=gate) as srv:
        proc = start_recording_eval(osmo_bin, store, srv, project)
        proc.send_signal(signal.SIGINT)
        err = stopped_at_the_gate(proc, gate)
        assert proc.returncode == 130, err
        assert "Resume with the same command" in err
        done, status = recorded(store)
        assert 0 < done < ROWS and status == "interrupted"
        check_resume(osmo_bin, store, project, srv)


def test_an_interrupted_fresh_start_resumes_computing_anew(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    """Resuming a --fresh eval goes on computing every run anew: it does not take the runs
    it had not reached yet from the state it started over from."""
    store = tmp_path / "store"
    with Gate(ROWS + 8) as gate, MockServer(responder=gate) as srv:
        cmd = eval_cmd(osmo_bin, store, srv.base_url)
        assert subprocess.run(cmd, cwd=project, capture_output=True, timeout=120).returncode == 0
        assert srv.calls == ROWS
        proc = subprocess.Popen([*cmd, "--fresh"], cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        # 8 runs done, and all 4 workers waiting on their next call
        wait_until(lambda: gate.held == 4, what="the --fresh eval making 8 runs", proc=proc)
        proc.send_signal(signal.SIGINT)
        err = stopped_at_the_gate(proc, gate)
        assert proc.returncode == 130 and "Resume with the same command without --fresh" in err
        done, status = recorded(store)
        assert 0 < done < ROWS and status == "interrupted"
        r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["session"]["computed"] == ROWS - done
        assert srv.calls == 2 * ROWS  # every run asked again, once
        assert recorded(store) == (ROWS, "completed")


AGENT_STEPS = 3


@pytest.mark.parametrize("index_behind", [False, True])
def test_an_agents_answered_calls_survive_a_sigkill_mid_rollout(
    osmo_bin: str, tmp_path: Path, project: Path, index_behind: bool
) -> None:
    """Each model call an agent makes is recorded once answered, not when its rollout ends:
    killed while every rollout waits on its last call, the resumed eval makes only those.
    Also when the kill fell between the config's commit and the shared index's update (the
    index then lacks them): a resume looks in its own config first."""
    rows = 6
    (project / "agent.py").write_text(
        "def solve(messages, row, client):\n"
        f"    for step in range({AGENT_STEPS}):\n"
        "        convo = messages + [{'role': 'user', 'content': f'step {step}'}]\n"
        "        reply = client.chat(convo)\n"
        "    return convo + [reply]\n"
    )
    release = threading.Event()

    def responder(request: dict[str, Any]) -> str:
        if request["messages"][-1]["content"] == f"step {AGENT_STEPS - 1}":
            release.wait(60)  # the last step hangs until the eval is killed
        return "ok"

    store = tmp_path / "store"
    with MockServer(responder=responder) as srv:
        cmd = [*eval_cmd(osmo_bin, store, srv.base_url), "--agent", "agent.py:solve",
               "--limit", str(rows), "--concurrency", str(rows)]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        answered = rows * (AGENT_STEPS - 1)
        wait_until(
            lambda: cached_entries(store) >= answered,  # recorded in the config's cache manifest
            what="the agents' answered calls being recorded",
            proc=proc,
        )
        if not index_behind:  # the shared index is updated right after the config's commit
            wait_until(lambda: index_entries(store) >= answered, what="the index update", proc=proc)
        killed(proc)
        release.set()
        assert recorded(store)[0] == 0  # no run finished
        if index_behind:
            with Repository.open(store) as repo:
                # Absent if the kill came before the first index update: behind all the same.
                if repo.refs.read(INDEX_REF) is not None:
                    repo.delete_ref(INDEX_REF)
        r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["summary"]["runs"] == rows and body["session"]["model_calls"] == rows


def test_a_retry_cut_short_replays_the_answers_it_got_on_resume(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    """--retry-failed asks again for what the failed attempt got, but a retry killed half
    way replays, when resumed, the answers the retry itself had got."""
    rows = 4
    (project / "agent.py").write_text(
        "import os\n"
        "def solve(messages, row, client):\n"
        "    first = client.chat(messages + [{'role': 'user', 'content': 'step 0'}])\n"
        "    if os.path.exists('broken'):\n"
        "        raise RuntimeError('tool crashed')\n"
        "    second = client.chat(messages + [{'role': 'user', 'content': 'step 1'}])\n"
        "    return messages + [first, second]\n"
    )
    release = threading.Event()
    hold = threading.Event()

    def responder(request: dict[str, Any]) -> str:
        if hold.is_set() and request["messages"][-1]["content"] == "step 1":
            release.wait(60)
        return "ok"

    store = tmp_path / "store"
    with MockServer(responder=responder) as srv:
        cmd = [*eval_cmd(osmo_bin, store, srv.base_url), "--agent", "agent.py:solve",
               "--limit", str(rows), "--concurrency", str(rows)]  # fmt: skip
        (project / "broken").write_text("")
        r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)
        # every run failed: the eval says so with its exit status
        assert r.returncode == EXIT_ALL_FAILED and json.loads(r.stdout)["summary"]["failed"] == rows
        (project / "broken").unlink()
        failed_answers = cache_answers(store)  # key -> id of the failed attempts' answers
        hold.set()
        proc = subprocess.Popen([*cmd, "--retry-failed"], cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_until(
            lambda: sum(cache_answers(store)[k] != v for k, v in failed_answers.items()) == rows,
            what="the retry's step-0 answers all being recorded",
            proc=proc,
        )
        killed(proc)
        release.set()
        hold.clear()
        assert cache_answers(store).keys() == failed_answers.keys()  # same keys, new answers
        calls = srv.calls
        r = subprocess.run([*cmd, "--retry-failed"], cwd=project, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["summary"]["failed"] == 0 and body["summary"]["runs"] == rows
        assert srv.calls - calls == rows  # step 1 only: step 0 replayed from the retry
        assert body["session"]["model_calls"] == rows


def cache_answers(store: Path) -> dict[str, str]:
    """The config's cache manifest: key -> blob id."""
    with Repository.open(store) as repo:
        trees = ConfigState.from_run(repo, list_configs(repo)[0].run_id).trees
        return {e.name: e.oid for e in iter_tree(repo.objects, trees["cache"])}


def index_entries(store: Path) -> int:
    with Repository.open(store) as repo:
        root = repo.refs.read(INDEX_REF)
        return 0 if root is None else tree_count(repo.objects, root)


def cached_entries(store: Path) -> int:
    if not (store / "refs" / "evals").is_dir():
        return 0
    with Repository.open(store) as repo:
        configs = list_configs(repo)
        if not configs:
            return 0
        return ConfigState.from_run(repo, configs[0].run_id).count(repo, "cache")


def test_a_run_that_reuses_an_answer_of_a_run_not_yet_recorded_stores_it_too(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    """Two rows ask the same question. The first row's run made the call but is slow to
    score, so the second row takes the answer from this session's memory and is recorded
    first. Killed before the first is recorded, the store must still hold the answer the
    second names (fsck clean), and resuming must not turn it into a failed run."""
    q = "What is 2 + 2?"
    rows = [{"user_prompt": q, "ground_truth": "4", "wait": 30},  # made the call, then waits
            {"user_prompt": "What is 1 + 1?", "ground_truth": "2", "wait": 0.5},
            {"user_prompt": q, "ground_truth": "4", "wait": 0}]  # fmt: skip
    (project / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "judge.py").write_text(
        "import os, time\n"
        "def judge(solution_str, ground_truth, extra_info):\n"
        "    if os.path.exists('hold'):\n"
        "        time.sleep(float(extra_info['wait']))\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    (project / "hold").write_text("")
    store = tmp_path / "store"
    with MockServer() as srv:
        cmd = [osmo_bin, "--store", str(store), "eval", "-d", "rows.jsonl", "--model", "m",
               "--base-url", srv.base_url, "--eval-fn", "judge.py:judge", "--concurrency", "2",
               "--json"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_until(
            lambda: (store / "refs" / "evals").is_dir() and recorded(store)[0] == 2,
            what="rows 2 and 3 being recorded",
            proc=proc,
        )
        killed(proc)  # the first row is still being scored: its judge waits 30 s
        assert srv.calls == 2  # the third row's answer came from the first row's call
        with Repository.open(store) as repo:
            report = fsck(repo, full=True)
            assert report.ok, report.problems
        (project / "hold").unlink()  # the same config, scored at once
        r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["summary"]["failed"] == 0 and body["summary"]["runs"] == 3
        assert body["session"]["reused_samples"] == 2
        assert srv.calls == 2  # the first row's answer was stored with the third row's run


def test_a_pull_into_a_running_eval_is_merged_and_the_eval_goes_on(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    """Two machines run a shard each; one pulls the other's results while its own eval of
    the config runs. The eval merges the moved ref and completes; nothing is lost."""
    a, b = tmp_path / "a", tmp_path / "b"
    with Gate(10) as gate, MockServer() as srv:
        cmd = eval_cmd(osmo_bin, a, srv.base_url)
        r = subprocess.run([*cmd, "--shard", "1/2"], cwd=project, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        shard_1 = recorded(a)[0]
        osmo = [osmo_bin, "--store", str(b)]
        subprocess.run([*osmo, "init"], check=True, capture_output=True)
        subprocess.run([*osmo, "remote", "add", "origin", str(a)], check=True,
                       capture_output=True)  # fmt: skip
        srv.responder = gate  # shard 2 stays running until the pull is done
        proc = start_recording_eval(osmo_bin, b, srv, project, args=("--shard", "2/2"))
        pull = subprocess.run([*osmo, "pull"], capture_output=True, text=True, timeout=60)
        assert pull.returncode == 0, pull.stderr
        assert proc.poll() is None, "the eval ended before the pull: nothing was tested"
        gate.release()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        body = json.loads(out)
        assert body["status"] == "completed" and body["summary"]["runs"] == ROWS
        assert srv.calls == ROWS  # each run made once, on one machine or the other
        assert recorded(b) == (ROWS, "completed") and 0 < shard_1 < ROWS
        with Repository.open(b) as repo:
            report = fsck(repo, full=True)
            assert report.ok, report.problems


def test_second_eval_of_same_config_waits_then_fails(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with Gate(8) as gate, MockServer(responder=gate) as srv:
        first = start_recording_eval(osmo_bin, store, srv, project)  # held at the gate
        second = subprocess.run(
            eval_cmd(osmo_bin, store, srv.base_url), cwd=project, capture_output=True, text=True,
            env={**os.environ, "OSMO_LOCK_TIMEOUT": "0.5"}, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        waiting, error = second.stderr.splitlines()[:2]
        assert waiting.startswith("osmo: another eval of config") and "up to 0.5s" in waiting
        assert error.startswith("osmo: error: another eval of config")
        gate.release()
        first.communicate(timeout=120)
        assert first.returncode == 0


def test_ctrl_c_while_waiting_for_the_config_stops_at_once(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with Gate(8) as gate, MockServer(responder=gate) as srv:
        first = start_recording_eval(osmo_bin, store, srv, project)  # held at the gate
        second = subprocess.Popen(eval_cmd(osmo_bin, store, srv.base_url), cwd=project,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "OSMO_LOCK_TIMEOUT": "600"})  # fmt: skip
        assert second.stderr is not None
        wait_for_line(second.stderr, second, "osmo: another eval of config")
        second.send_signal(signal.SIGINT)
        # Within the 60 s deadline, far inside its 600 s wait: Ctrl-C ended the wait.
        _, err = second.communicate(timeout=60)
        assert second.returncode == 130, err
        assert "interrupted while waiting for another eval of this config" in err
        assert first.poll() is None  # the first eval is not disturbed, and completes
        gate.release()
        first.communicate(timeout=120)
        assert first.returncode == 0
        assert recorded(store) == (ROWS, "completed")


def test_different_configs_run_side_by_side(osmo_bin: str, tmp_path: Path, project: Path) -> None:
    (project / "fns2.py").write_text(
        "def close(solution_str, ground_truth, extra_info):\n"
        "    return abs(int(solution_str) - int(ground_truth)) <= 1\n"
    )
    (project / "fns3.py").write_text(
        "def one(solution_str, ground_truth, extra_info):\n    return 1\n"
    )
    store = tmp_path / "store"
    with MockServer(latency=0.01) as srv:
        base = eval_cmd(osmo_bin, store, srv.base_url)
        second = [
            *base[: base.index("fns.py:exact")],
            "fns2.py:close",
            *base[base.index("fns.py:exact") + 1 :],
        ]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        procs = [subprocess.Popen(cmd, cwd=project, **pipes) for cmd in (base, second)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
            assert json.loads(out)["summary"]["runs"] == ROWS
        with Repository.open(store) as repo:
            assert len(list_configs(repo)) == 2
            assert fsck(repo).ok
        # Both sessions' rollouts reached the shared index: a third config calls nothing.
        calls = srv.calls
        third = [
            *base[: base.index("fns.py:exact")],
            "fns3.py:one",
            *base[base.index("fns.py:exact") + 1 :],
        ]
        r = subprocess.run(third, cwd=project, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert srv.calls == calls
        assert json.loads(r.stdout)["session"]["reused_rollouts"] == ROWS


def test_rm_refuses_a_config_whose_eval_is_running(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with Gate(8) as gate, MockServer(responder=gate) as srv:
        proc = start_recording_eval(osmo_bin, store, srv, project)  # held at the gate
        rm = subprocess.run([osmo_bin, "--store", str(store), "eval", "cache", "rm", "--all", "-y"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert rm.returncode == 1 and "has an eval running" in rm.stderr
        gate.release()
        proc.communicate(timeout=120)
        assert proc.returncode == 0
        rm = subprocess.run([osmo_bin, "--store", str(store), "eval", "cache", "rm", "--all", "-y"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert rm.returncode == 0 and "removed 1 config" in rm.stdout


# --- the recorder process ------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def recorder_of(pid: int) -> int:
    for child in children_of(pid):
        try:
            if b"recorder_proc" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except OSError:
            continue
    raise AssertionError(f"no recorder process under {pid}")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited, waiting to be reaped by its (dead) parent's reaper


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@linux_only
def test_a_killed_eval_takes_its_recorder_process_with_it(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with Gate(8) as gate, MockServer(responder=gate) as srv:
        proc = start_recording_eval(osmo_bin, store, srv, project)  # held at the gate
        child = recorder_of(proc.pid)
        killed(proc)
        wait_until(lambda: gone(child), what="the recorder process ending with the eval")
        gate.release()
        check_resume(osmo_bin, store, project, srv)


@linux_only
def test_a_dead_recorder_process_stops_the_eval_with_one_line(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    store = tmp_path / "store"
    with Gate(8) as gate, MockServer(responder=gate) as srv:
        proc = start_recording_eval(osmo_bin, store, srv, project)  # held at the gate
        os.kill(recorder_of(proc.pid), signal.SIGKILL)
        gate.release()  # the next results find the recorder gone
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        lines = [ln for ln in err.splitlines() if ln.startswith("osmo: error:")]
        assert lines == ["osmo: error: the eval's recorder process died (exit status -9)"], err
        assert "Traceback" not in err
        check_resume(osmo_bin, store, project, srv)


@linux_only
@pytest.mark.parametrize("how", ["ctrl-c", "systemctl-stop"])
def test_a_stop_signal_to_all_of_the_eval_still_records_the_grace_period(
    osmo_bin: str, tmp_path: Path, project: Path, how: str
) -> None:
    """A terminal's Ctrl-C signals the eval's whole process group (the recorder process has
    a session of its own); `systemctl stop` (KillMode=control-group) sends SIGTERM to the
    eval and its recorder alike. Either way, what finishes in the grace period is recorded."""
    store = tmp_path / "store"
    with Gate(20) as gate, MockServer(responder=gate) as srv:
        proc = start_recording_eval(osmo_bin, store, srv, project, start_new_session=True)
        child = recorder_of(proc.pid)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(child, signal.SIGTERM)
        err = stopped_at_the_gate(proc, gate)
        assert proc.returncode == 130, err
        done, status = recorded(store)
        assert 0 < done < ROWS and status == "interrupted"
        assert done >= shown_done(err)
        wait_until(lambda: gone(child), what="the recorder process ending with the eval")
        check_resume(osmo_bin, store, project, srv)


def test_thread_and_process_recorders_record_the_same(
    osmo_bin: str, tmp_path: Path, project: Path
) -> None:
    bodies = {}
    with MockServer() as srv:
        for mode in ("thread", "process"):
            store = tmp_path / mode
            r = subprocess.run(eval_cmd(osmo_bin, store, srv.base_url), cwd=project,
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "OSMO_RECORDER": mode})  # fmt: skip
            assert r.returncode == 0, r.stderr
            bodies[mode] = json.loads(r.stdout)
            with Repository.open(store) as repo:
                assert fsck(repo, full=True).ok
                state = ConfigState.from_run(repo, list_configs(repo)[0].run_id)
                bodies[mode]["names"] = state.names(repo, "samples")
                bodies[mode]["counts"] = list_configs(repo)[0].counts
    t, p = bodies["thread"], bodies["process"]
    assert t["config_id"] == p["config_id"] and t["names"] == p["names"]
    assert len(t["names"]) == ROWS and t["counts"] == p["counts"]
    drop = ("wall_time_s",)
    assert {k: v for k, v in t["summary"].items() if k not in drop} == {
        k: v for k, v in p["summary"].items() if k not in drop
    }


@pytest.mark.parametrize("gone_before_open", [False, True])
def test_without_a_recorder_process_the_eval_records_in_its_own(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog,
    gone_before_open: bool,
) -> None:  # fmt: skip
    """A recorder process that cannot start (here: the interpreter is not Python, as in a
    frozen app) leaves the eval to record in its own process, with a warning. Also when the
    child has exited before the eval writes to it, so that every write meets a broken pipe."""
    from osmo_store.cli.main import main
    from osmo_store.eval import recorder_proc

    store = tmp_path / "store"
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # starts, and exits at once
    if gone_before_open:
        popen = subprocess.Popen

        def popen_and_wait(*args: Any, **kwargs: Any) -> subprocess.Popen:
            proc = popen(*args, **kwargs)
            proc.wait()
            return proc

        monkeypatch.setattr(recorder_proc.subprocess, "Popen", popen_and_wait)
    with MockServer() as srv:
        code = main(eval_cmd("osmo", store, srv.base_url)[1:])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out)["summary"]["runs"] == ROWS and srv.calls == ROWS
    assert any("no recorder process" in r.getMessage() for r in caplog.records)
    done, status = recorded(store)
    assert done == ROWS and status == "completed"
