"""push / pull / clone against a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osmo_store import Repository
from osmo_store.backends.s3refs import open_s3_remote
from osmo_store.cli.main import main
from osmo_store.maintenance.fsck import fsck
from osmo_store.testing.mockserver import MockServer

from .s3server import aws_env_fixture, moto_server_fixture

moto = moto_server_fixture()
aws_env = aws_env_fixture()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [{"user_prompt": f"What is {i} * 2?", "ground_truth": str(2 * i)} for i in range(20)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sharded_push_to_s3_then_clone(
    moto, aws_env, project: Path, tmp_path: Path, capsys
) -> None:
    bucket = moto.new_bucket()
    url = f"s3://{bucket}/team/evals"
    with MockServer() as srv:
        for i in (1, 2):
            store = str(tmp_path / f"s{i}")
            assert (
                main(["--store", store, "remote", "add", "lake", url, "--endpoint-url", moto.url])
                == 0
            )
            run = ["eval", "-d", "data.jsonl", "--model", "m", "--base-url", srv.base_url,
                   "--eval-fn", "fns.py:exact", "-q", "--shard", f"{i}/2"]  # fmt: skip
            code = main(["--store", store, *run])
            assert code == 0
            assert main(["--store", store, "push", "lake"]) == 0
        capsys.readouterr()
        assert main(["--store", str(tmp_path / "s1"), "push", "lake"]) == 0  # no-op
        assert capsys.readouterr().out.startswith("pushed 0 objects")
    # clone from the bucket (endpoint from the environment this time)
    aws_env_endpoint = {"AWS_ENDPOINT_URL": moto.url}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in aws_env_endpoint.items():
            mp.setenv(k, v)
        assert main(["clone", url, str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["--store", str(tmp_path / "c"), "eval", "cache", "ls", "--json"]) == 0
    [config] = json.loads(capsys.readouterr().out)
    assert config["status"] == "completed" and config["done"] == 20
    with Repository.open(tmp_path / "c") as repo:
        assert fsck(repo).ok
    # every object in the bucket is sound and the ref names a complete closure
    objects, refs = open_s3_remote(url, endpoint_url=moto.url)
    [(name, oid)] = refs.list("refs/evals/").items()
    assert name == f"refs/evals/{config['config_id']}" and oid == config["run"]
    for oid in objects.iter_ids():
        objects.get(oid)  # verifies the hash
