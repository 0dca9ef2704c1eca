"""Merging two histories of one config is commutative, associative and idempotent."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osmo_store import ObjectType, Repository
from osmo_store.eval.merge import merge_trees
from osmo_store.eval.state import SUBTREES
from osmo_store.eval.stored import SampleReader, sample_blob
from osmo_store.hashing import canonical_json
from osmo_store.tree import TreeEntry, tree_get, write_tree

# One side's results: sample key -> (ok?, finished time, answer); answers differ per side.
results = st.dictionaries(
    st.sampled_from([f"row{i}.0" for i in range(6)]),
    st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 2)),
    max_size=6,
)


def build(repo: Repository, side: dict, machine: str = "") -> dict[str, str]:
    """One side's manifests. Rollouts differ by ``machine``: equal version 3 samples of two
    machines are one blob naming no rollout, each side's ``rollouts`` entry its own."""
    entries: dict[str, dict[str, str]] = {name: {} for name in SUBTREES}
    for key, (ok, finished, answer) in side.items():
        rkey = "r" + key
        # As an eval's rollouts do, each names its key: two keys never share one.
        rollout = canonical_json(
            {"key": rkey, "messages": [{"role": "assistant", "content": str(answer)}],
             "machine": machine}
        )  # fmt: skip
        rid = repo.objects.put(ObjectType.BLOB, rollout)
        row, run = key.split(".")
        sample = {"row": row, "run": int(run), "status": "ok" if ok else "failed",
                  "finished": finished, "answer": answer, "rollout": rkey if ok else None,
                  **({"rollout_id": rid} if ok else {})}  # fmt: skip
        # Versions 1 and 3 of sample blob, as stores written before and since version 2
        # hold; a version 3 sample's rollout is in the ``rollouts`` manifest.
        content = sample_blob(sample) if answer % 2 else canonical_json(sample)
        sid = repo.objects.put(ObjectType.BLOB, content)
        entries["samples" if ok else "failed"][key] = sid
        if ok:
            entries["cache"][rkey] = rid
            if answer % 2:
                entries["rollouts"][key] = rid
        entries["rows"]["k" + key.split(".")[0]] = repo.objects.put(ObjectType.BLOB, key.encode())
    return write_state(repo, entries)


def write_state(repo: Repository, entries: dict[str, dict[str, str]]) -> dict[str, str]:
    return {
        name: write_tree(
            repo.objects, [TreeEntry(k, ObjectType.BLOB, v) for k, v in entries[name].items()]
        )
        for name in SUBTREES
    }


def merged(repo: Repository, a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    return write_state(repo, merge_trees(repo, a, b))


settings_ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings_
@given(results, results, results)
def test_merge_is_commutative_associative_idempotent(tmp_path: Path, x, y, z) -> None:
    with Repository.open(tmp_path / "s") as repo:
        a, b, c = build(repo, x, "a"), build(repo, y, "b"), build(repo, z, "c")
        assert merged(repo, a, b) == merged(repo, b, a)
        assert merged(repo, merged(repo, a, b), c) == merged(repo, a, merged(repo, b, c))
        assert merged(repo, a, a) == a


@settings_
@given(results, results)
def test_success_beats_failure_then_newer_wins(tmp_path: Path, x, y) -> None:
    with Repository.open(tmp_path / "s") as repo:
        sides = [build(repo, x, "a"), build(repo, y, "b")]
        m = merge_trees(repo, *sides)
        reader = SampleReader(repo, write_state(repo, m))
        for key in set(x) | set(y):
            options = [v for v in (x.get(key), y.get(key)) if v is not None]
            best = max(options, key=lambda v: (v[0], v[1]))
            where = "samples" if best[0] else "failed"
            assert key in m[where] and key not in m["failed" if best[0] else "samples"]
            body = reader.load(m[where][key], key)
            assert (body["status"] == "ok", body["finished"]) == (best[0], best[1])
            if best[0]:
                # the cache entry of the rollout follows the winning sample
                rollout = json.loads(repo.objects.get_typed(body["rollout_id"], ObjectType.BLOB))
                assert m["cache"][rollout["key"]] == body["rollout_id"]
                # and a version 3 sample's rollout is that of a side holding the sample (of
                # either, if both hold that blob): the merged ``rollouts`` follows it
                holders = [sides[i] for i, v in enumerate((x, y)) if key in v
                           and tree_get(repo.objects, sides[i]["samples"], key) is not None
                           and tree_get(repo.objects, sides[i]["samples"], key).oid
                           == m[where][key]]  # fmt: skip
                if body.get("schema") == 3:
                    assert m["rollouts"][key] in {SampleReader(repo, s).load(m[where][key], key)
                                                  ["rollout_id"] for s in holders}  # fmt: skip
                else:
                    assert key not in m["rollouts"]


def test_a_fresh_start_on_either_side_stays_isolated(tmp_path: Path) -> None:
    """A merged record keeps the --fresh mark whichever side was updated last."""
    from osmo_store.eval.merge import _merged_meta

    fresh = {"isolated": True, "session": {"updated": 1.0}, "counts": {"total": 0}}
    plain = {"session": {"updated": 2.0}, "counts": {"total": 0}}
    empty: dict[str, dict[str, str]] = {name: {} for name in SUBTREES}
    with Repository.open(tmp_path / "s") as repo:
        for a, b in ((fresh, plain), (plain, fresh)):
            meta = _merged_meta(repo, a, b, empty, 0, 0, ("a" * 64, "b" * 64), None)
            assert meta["isolated"] is True
        meta = _merged_meta(repo, plain, dict(plain), empty, 0, 0, ("a" * 64, "b" * 64), None)
        assert "isolated" not in meta


def test_merged_status_is_partial_only_for_finished_shards(tmp_path: Path) -> None:
    """Two interrupted histories merge to 'interrupted'; 'partial' means a finished shard
    waiting for the others; a merge with every run is 'completed'."""
    from osmo_store.eval.merge import _merged_meta

    def side(status: str) -> dict:
        return {"status": status, "session": {"updated": 1.0}, "counts": {"total": 4}}

    empty: dict[str, dict[str, str]] = {name: {} for name in SUBTREES}
    parents = ("a" * 64, "b" * 64)
    with Repository.open(tmp_path / "s") as repo:
        for a, b, done, want in [
            ("interrupted", "interrupted", 2, "interrupted"),
            ("partial", "interrupted", 2, "partial"),
            ("partial", "partial", 4, "completed"),
        ]:
            meta = _merged_meta(repo, side(a), side(b), empty, done, 0, parents, None)
            assert meta["status"] == want


def _one_sample_side(
    repo: Repository, key: str, content: bytes, rollout: str, v3: bool
) -> tuple[dict[str, str], str]:
    """A side holding one finished run: its sample blob ``content`` and its ``rollout``."""
    sid = repo.objects.put(ObjectType.BLOB, content)
    entries: dict[str, dict[str, str]] = {name: {} for name in SUBTREES}
    entries["samples"][key] = sid
    entries["cache"]["r" + key] = rollout
    if v3:
        entries["rollouts"][key] = rollout
    return write_state(repo, entries), sid


def test_newer_wins_at_the_second_both_versions_keep(tmp_path: Path) -> None:
    """A version 2 sample keeps ``finished`` in milliseconds, a version 3 one in whole
    seconds (truncated): compared as stored, a run that finished at 100.5 s (version 2)
    beat one of the same run that finished later, at 100.9 s, written as 100 (version 3).
    Compared in whole seconds they tie, and the larger blob id decides, in either order."""
    key = "row0.0"
    with Repository.open(tmp_path / "s") as repo:
        rid_a, rid_b = (
            repo.objects.put(ObjectType.BLOB, canonical_json(
                {"key": "r" + key, "messages": [], "machine": machine}))
            for machine in "ab"
        )  # fmt: skip
        v2 = canonical_json({"finished": 100.5, "rollout_id": rid_a, "schema": 2,
                             "usage": {"total_tokens": 7}})  # fmt: skip
        a, v2_id = _one_sample_side(repo, key, v2, rid_a, v3=False)
        for tokens in range(1, 200):  # until the version 3 blob's id is the larger
            v3 = sample_blob({"row": "row0", "run": 0, "status": "ok", "finished": 100.9,
                              "usage": {"total_tokens": tokens}})  # fmt: skip
            b, v3_id = _one_sample_side(repo, key, v3, rid_b, v3=True)
            if v3_id > v2_id:
                break
        assert v3_id > v2_id
        assert json.loads(v3)["finished"] == 100  # what version 3 keeps of 100.9
        for sides in ((a, b), (b, a)):
            m = merge_trees(repo, *sides)
            assert m["samples"] == {key: v3_id}
            assert m["rollouts"] == {key: rid_b}  # the winner's rollout, and its cache entry
            assert m["cache"] == {"r" + key: rid_b}
