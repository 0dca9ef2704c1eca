"""Remotes: named in the store's ``config.json``, opened as an ObjectStore + RefStore pair
(another store directory, an ``osmo serve`` over HTTP, or an S3 bucket)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import ObjectStore
from ..backends.fsutil import replace_durably
from ..backends.locking import FileLock
from ..errors import RemoteError, UsageError
from ..hashing import ObjectId
from ..refs import RefStore
from ..repo import Repository, is_store

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _config_path(repo: Repository) -> Path:
    assert repo.layout is not None, "remotes need a store on disk"
    return repo.layout.config_file


def load_config(repo: Repository) -> dict[str, Any]:
    path = _config_path(repo)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as e:
        raise RemoteError(f"cannot read {path}: {e}") from None
    # The shape every reader relies on: {"remotes": {name: {"url": ..., ...}}}.
    remotes = config.get("remotes", {}) if isinstance(config, dict) else None
    if not isinstance(remotes, dict) or not all(_is_remote(e) for e in remotes.values()):
        raise RemoteError(f"cannot read {path}: not a store settings file")
    return config


def _is_remote(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("url"), str)
        and all(isinstance(entry.get(k, ""), str) for k in ("token_file", "endpoint_url"))
    )


def _save_config(repo: Repository, config: dict[str, Any]) -> None:
    replace_durably(
        _config_path(repo), (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    )


def _config_lock(repo: Repository) -> FileLock:
    assert repo.layout is not None
    return FileLock(repo.layout.config_lock, timeout=30, what="the store's settings")


def add_remote(
    repo: Repository,
    name: str,
    url: str,
    *,
    token_file: str | None = None,
    endpoint_url: str | None = None,
) -> None:
    if not name or not set(name) <= _NAME_OK or name.startswith("."):
        raise UsageError(f"invalid remote name {name!r}: use letters, digits, '-', '_', '.'")
    kind = remote_kind(url)
    if kind == "dir":
        url = str(Path(url.removeprefix("file://")).expanduser().absolute())
    entry: dict[str, Any] = {"url": url}
    if token_file:
        entry["token_file"] = str(Path(token_file).expanduser().absolute())
    if endpoint_url:
        entry["endpoint_url"] = endpoint_url
    with _config_lock(repo):
        config = load_config(repo)
        remotes = config.setdefault("remotes", {})
        if name in remotes:
            raise UsageError(f"remote {name!r} exists", hint=f"osmo remote remove {name} first")
        remotes[name] = entry
        _save_config(repo, config)


def remove_remote(repo: Repository, name: str) -> None:
    with _config_lock(repo):
        config = load_config(repo)
        if name not in config.get("remotes", {}):
            raise UsageError(f"no remote named {name!r}")
        del config["remotes"][name]
        _save_config(repo, config)


def list_remotes(repo: Repository) -> dict[str, dict[str, Any]]:
    return dict(sorted(load_config(repo).get("remotes", {}).items()))


def remote_kind(url: str) -> str:
    if url.startswith(("http://", "https://")):
        return "http"
    if url.startswith("s3://"):
        return "s3"
    if "://" in url and not url.startswith("file://"):
        raise UsageError(
            f"unsupported remote URL {url!r}: use a path, file://, http(s):// or s3://"
        )
    return "dir"


# --- opening a remote -------------------------------------------------------------------


@dataclass
class Remote:
    name: str | None
    url: str
    objects: ObjectStore
    refs: RefStore
    repo: Repository | None = None  # set when the remote is a store directory

    def update_ref(self, name: str, new: ObjectId, expected: object, message: str) -> None:
        if self.repo is not None:
            self.repo.update_ref(name, new, expected, message=message)
        else:
            self.refs.update(name, new, expected, message=message)

    def close(self) -> None:
        self.objects.close()
        if self.repo is not None:
            self.repo.close()

    @property
    def label(self) -> str:
        return self.name or self.url


def _read_token(entry: dict[str, Any]) -> str | None:
    token = os.environ.get("OSMO_TOKEN")
    if token:
        return token.strip()
    path = entry.get("token_file")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise RemoteError(f"cannot read token file {path}: {e.strerror}") from None
    return None


def open_remote(repo: Repository | None, spec: str, *, create: bool = False) -> Remote:
    """A configured remote name or a URL (path, file://, http(s)://, s3://)."""
    entry: dict[str, Any] = {}
    name = None
    if repo is not None and repo.path is not None:
        entry = list_remotes(repo).get(spec, {})
        if entry:
            name = spec
    url = entry.get("url", spec)
    kind = remote_kind(url)
    if kind == "http":
        from ..http.client import open_http_remote

        objects, refs = open_http_remote(url, _read_token(entry))
        return Remote(name, url, objects, refs)
    if kind == "s3":
        from ..backends.s3refs import open_s3_remote

        objects, refs = open_s3_remote(url, endpoint_url=entry.get("endpoint_url"))
        return Remote(name, url, objects, refs)
    path = Path(url.removeprefix("file://")).expanduser()
    if not create and not is_store(path):
        raise RemoteError(f"no osmo store at {path}", hint=f"create it with: osmo init {path}")
    other = Repository.open(path)
    return Remote(name, str(other.path), other.objects, other.refs, other)
