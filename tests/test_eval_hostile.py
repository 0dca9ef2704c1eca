"""`osmo eval` meeting stored results of a shape it does not expect (issue 12): a rollout or
model-call blob that hashes right but is not what its key promises (a pull can bring one)
is a miss, computed again with a warning, as a damaged one is; never a crash."""

from __future__ import annotations

import json
from pathlib import Path

from osmo_store import ObjectType, Repository, RunRecord
from osmo_store.eval.catalog import list_configs
from osmo_store.eval.configstate import config_ref
from osmo_store.eval.state import ConfigState, rebuild_index
from osmo_store.eval.stored import SampleReader
from osmo_store.tree import TreeEntry, iter_tree, update_tree, write_tree

from .test_eval import osmo_eval, project, server  # noqa: F401 (fixtures)


def test_a_misshapen_stored_rollout_and_call_are_computed_again(
    osmo_eval,  # noqa: F811 (the fixture imported above)
    server,  # noqa: F811
    store_path: Path,
    caplog,
) -> None:
    code, _, _ = osmo_eval()
    assert code == 0 and server.calls == 12
    with Repository.open(store_path) as repo:
        (config,) = list_configs(repo)
        state = ConfigState.from_run(repo, config.run_id)
        first = next(iter_tree(repo.objects, state.trees["samples"]))
        sample = SampleReader(repo, state.trees).load(first.oid, first.name)
        rollout = json.loads(repo.objects.get_typed(sample["rollout_id"], ObjectType.BLOB))
        misshapen = {
            rollout["key"]: b'["not", "a", "rollout"]',
            rollout["calls"][0]["key"]: b'{"response": {"choices": 7}}',
        }
        changes = {
            key: TreeEntry(key, ObjectType.BLOB, repo.objects.put(ObjectType.BLOB, content))
            for key, content in misshapen.items()
        }
        trees = {**state.trees, "cache": update_tree(repo.objects, state.trees["cache"], changes)}
        root = write_tree(
            repo.objects, [TreeEntry(n, ObjectType.TREE, t) for n, t in trees.items()]
        )
        run = repo.objects.put_run(RunRecord(root, (config.run_id,), state.record.meta))
        repo.update_ref(config_ref(config.config_id), run, config.run_id)
        rebuild_index(repo)
    code, body, err = osmo_eval(fns=("other.py:length",))  # a new config: reuses by key
    assert code == 0, err
    assert server.calls == 13 and body["session"]["computed"] == 1
    assert "a stored result is damaged" in caplog.text
