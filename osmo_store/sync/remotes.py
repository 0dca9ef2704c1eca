"""Remotes: named in the store's ``config.json``, opened as an ObjectStore + RefStore pair
(another store directory, an ``osmo serve`` over HTTP, or an S3 bucket)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import ObjectStore
from ..backends.fsutil import replace_durably
from ..backends.locking import FileLock
from ..errors import RemoteError, UsageError
from ..hashing import ObjectId
from ..objects import MAX_REMOTE_OBJECT
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
    url = check_remote_url(url, endpoint_url)
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


_KINDS_HINT = "give a path, file://PATH, http(s)://HOST[:PORT] (osmo serve) or s3://BUCKET/PREFIX"
# A relative path that reads as a host name (``osmo.example.org``), or as ``host:port`` or
# ``[user@]host:path`` (ssh, as git takes it): meant for a server, most likely.
_HOST_LIKE = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(/.*)?")
_COLON_FIRST = re.compile(r"[^/]*:.*")


def remote_kind(url: str) -> str:
    if url.startswith(("http://", "https://")):
        return "http"
    if url.startswith("s3://"):
        return "s3"
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unsupported remote URL {url!r}", hint=_KINDS_HINT)
    return "dir"


def check_remote_url(url: str, endpoint_url: str | None = None) -> str:
    """A remote's URL as ``add_remote`` keeps it (a directory's absolute path), or a
    ``UsageError`` (one line and a hint) for one no remote could use: checked when the
    remote is added, not at the first push that needs it."""
    kind = remote_kind(url) if url.strip() else "empty"
    if kind == "empty":
        raise UsageError("a remote needs a URL", hint=_KINDS_HINT)
    if endpoint_url is not None and kind != "s3":
        raise UsageError("--endpoint-url is for s3:// remotes", hint="leave it out")
    if kind == "http":
        from ..http.connection import normalize_server_url  # here: `requests` is slow to import

        return _with_hint(normalize_server_url, url, "give http(s)://HOST[:PORT][/PATH]")
    if kind == "s3":
        from ..backends.s3 import parse_s3_url

        parse_s3_url(url)
        if endpoint_url is not None:
            _with_hint(_check_endpoint, endpoint_url, "give http(s)://HOST[:PORT]")
        return url
    return str(_check_dir_remote(url))


def _with_hint(check: Any, text: str, hint: str) -> Any:
    try:
        return check(text)
    except UsageError as e:
        raise UsageError(str(e), hint=e.hint or hint) from None


def _check_endpoint(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid --endpoint-url {url!r}")


def _check_dir_remote(url: str) -> Path:
    """A directory remote: an osmo store, or what a push can make one (a new or empty
    directory), and not text that looks meant for a server."""
    given = url.removeprefix("file://")
    if not given:
        raise UsageError(f"no path in {url!r}", hint="give file:///ABSOLUTE/PATH")
    path = Path(given).expanduser()
    relative = not url.startswith(("file://", "/", ".", "~"))
    if relative and not path.exists():
        first = given.split("/", 1)[0]
        port = first.rpartition(":")[2]
        if _COLON_FIRST.fullmatch(given) and not port.isdigit():
            raise UsageError(
                f"not a remote URL osmo can use: {url!r} (ssh is not supported)",
                hint="an osmo server is http(s)://HOST[:PORT]; a directory of that name: "
                f"./{given}",
            )
        if _COLON_FIRST.fullmatch(given) or _HOST_LIKE.fullmatch(given):
            raise UsageError(
                f"{url!r} reads as a server but has no scheme",
                hint=f"an osmo server: https://{given}; a directory of that name: ./{given}",
            )
    path = path.absolute()
    if path.exists() and not path.is_dir():
        raise UsageError(f"not a directory: {path}", hint=_KINDS_HINT)
    if path.is_dir() and not is_store(path) and any(path.iterdir()):
        raise UsageError(
            f"{path} is neither an osmo store nor empty",
            hint=f"make it one with osmo init {path}, or name a new or empty directory",
        )
    return path


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
    # Another store, read as any remote is: it could hold a few bytes of zstd declaring
    # gigabytes (a store on this machine reads up to MAX_OBJECT_SIZE).
    other.objects.max_object_size = MAX_REMOTE_OBJECT
    return Remote(name, str(other.path), other.objects, other.refs, other)
