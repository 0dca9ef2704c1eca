"""The group-commit recorder on a real local store: what each commit leaves behind."""

from __future__ import annotations

from osmo_store import Repository
from osmo_store.eval.state import (
    MERGE_FANOUT,
    ConfigState,
    Recorder,
    SampleResult,
    blob,
    sample_name,
)
from osmo_store.fsck import fsck
from osmo_store.hashing import canonical_json


def result(i: int) -> SampleResult:
    row = f"row{i:04d}"
    body = {"row": row, "run": 0, "status": "ok", "scores": {"f": i % 2}}
    return SampleResult(
        sample_name(row, 0), False, canonical_json(body), body, [blob(row, "rows", b"{}")]
    )


def test_commit_packs_are_folded_in_tiers_and_nothing_is_lost(repo: Repository) -> None:
    config_id = "c" * 64
    state = ConfigState.load(repo, config_id)
    rec = Recorder(repo, config_id, state, ())
    commits = MERGE_FANOUT**2 + MERGE_FANOUT - 2  # 70 with F = 8: base-8 digits 1, 0, 6
    for i in range(commits):
        rec.commit([result(i)], lambda counts: {"counts": counts})
    # One pack per commit, folded F at a time into the next level like a base-F counter.
    assert sorted(level for _, level in rec._packs) == [0] * (MERGE_FANOUT - 2) + [2]
    on_disk = {p.idx_path for p in repo.objects.packs()}
    assert {idx for idx, _ in rec._packs} <= on_disk
    state = ConfigState.load(repo, config_id)
    assert state.names(repo, "samples") == {sample_name(f"row{i:04d}", 0) for i in range(commits)}
    assert rec.counts == {"done": commits, "failed": 0}
    assert fsck(repo, full=True).ok
