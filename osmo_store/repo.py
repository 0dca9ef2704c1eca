"""A store: objects + refs (+ reflogs) at one place, and where that place is by default."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from .backends.base import ObjectStore
from .backends.fsutil import fsync_dir, publish_no_overwrite, write_temp
from .backends.layout import STORE_FILE, StoreLayout
from .backends.local import LocalObjectStore
from .backends.localrefs import LocalRefStore
from .backends.locking import FileLock
from .errors import InvalidRefName, ObjectNotFound, RefConflict, RefTargetMissing, StoreError
from .hashing import ObjectId, is_oid_prefix
from .refs import ANY, RefStore, validate_ref_name

STORE_FORMAT = "osmo-store"
#: the store format version osmo writes; it reads every version in READABLE_STORE_VERSIONS.
#: Version 2 stores may hold version 2 packs (objects_spec.md section 5), which an osmo that
#: reads only version 1 must not see: it refuses the whole store instead. Version 3 stores
#: may hold eval configs whose sample blobs leave their rollout to the config's `rollouts`
#: manifest (objects_spec.md section 9), which an osmo that reads only up to version 2 would
#: drop when it resumed the config (it writes the four manifests it knows): it refuses them.
STORE_VERSION = 3
READABLE_STORE_VERSIONS = (1, 2, 3)
# How long a ref write waits while gc re-reads the refs and deletes (it holds the ref
# barrier alone for that): long, because giving up fails an eval's commit.
REF_BARRIER_TIMEOUT = 600.0


def default_store_path() -> Path:
    """``$OSMO_STORE`` if set, else the platform's per-user cache directory + ``osmo``."""
    env = os.environ.get("OSMO_STORE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "osmo"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "osmo" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "osmo"


def is_store(path: Path) -> bool:
    return StoreLayout(path).store_file.is_file()


def init_store(path: Path) -> tuple[Path, bool]:
    """Create a store at ``path`` (idempotent, and safe when several processes do it at
    once). Returns (path, created). A non-empty directory that is not a store is refused
    rather than filled with store files."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"not a directory: {path}")
    if is_store(path):
        _make_subdirs(path)
        return path, False
    if not path.exists():
        # Build it aside and rename it into place: another process creating the same store
        # either sees nothing or a complete store, never a half-made directory.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.init-{os.getpid()}-{os.urandom(4).hex()}"
        tmp.mkdir()
        _make_subdirs(tmp)
        _publish_store_file(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            import shutil  # here: rare, and shutil is a noticeable part of start-up

            shutil.rmtree(tmp, ignore_errors=True)
            if is_store(path):
                return path, False
        else:
            fsync_dir(path.parent)
            return path, True
    if any(n for n in os.listdir(path) if n != STORE_FILE) and not is_store(path):
        raise StoreError(
            f"{path} exists, is not empty and is not an osmo store",
            hint="choose an empty or new directory",
        )
    created = _publish_store_file(path)
    _make_subdirs(path)
    return path, created


def _make_subdirs(path: Path) -> None:
    for sub in StoreLayout(path).subdirs():
        sub.mkdir(parents=True, exist_ok=True)


def _store_file_body(version: int) -> bytes:
    return (json.dumps({"format": STORE_FORMAT, "version": version}, indent=2) + "\n").encode()


def _publish_store_file(path: Path) -> bool:
    """Write ``osmo.json`` without ever leaving a temp file inside the store directory."""
    tmp = write_temp(path.parent, _store_file_body(STORE_VERSION), prefix=".osmo-")
    created = publish_no_overwrite(tmp, StoreLayout(path).store_file)
    fsync_dir(path)
    return created


def upgrade_store_format(repo: Repository, version: int = 2) -> bool:
    """Raise a store's format version to at least ``version``, before anything of that
    version is written to it (``osmo repack`` raises version 1 to 2; an eval or a sync of
    eval configs raises any older store to 3): ``osmo.json`` is replaced atomically, never
    lowered (another process may have raised it meanwhile), and from then on the store
    writes version 2 packs. True if it was raised. A store in memory has no version."""
    if repo.layout is None:
        return False
    layout = repo.layout
    with FileLock(layout.lock("format"), timeout=REF_BARRIER_TIMEOUT, what="the store format"):
        current = _check_format(layout.root)
        if current < version:
            tmp = write_temp(layout.root, _store_file_body(version), prefix=".osmo-")
            os.replace(tmp, layout.store_file)
            fsync_dir(layout.root)
    repo.objects.pack_version = None
    return current < version


def _check_format(path: Path) -> int:
    """The store format version of the store at ``path``, if this osmo reads it."""
    store_file = StoreLayout(path).store_file
    try:
        body = json.loads(store_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise StoreError(f"cannot read {store_file}: {e}") from None
    if not isinstance(body, dict):
        raise StoreError(f"{path} is not an osmo store: {store_file} is not a JSON object")
    if body.get("format") != STORE_FORMAT:
        raise StoreError(f"{path} is not an osmo store")
    version = body.get("version")
    if type(version) is not int or version not in READABLE_STORE_VERSIONS:
        *first, last = map(str, READABLE_STORE_VERSIONS)
        readable = f"{', '.join(first)} and {last}" if first else last
        raise StoreError(
            f"{path} has store format version {version}; this osmo reads versions {readable}",
            hint="upgrade osmo",
        )
    return version


class Repository:
    """Objects and refs of one store. Moving a ref always goes through here, because this
    is where the write order is enforced: objects durable first, then the ref."""

    def __init__(
        self, objects: ObjectStore, refs: RefStore, layout: StoreLayout | None = None
    ) -> None:
        self.objects = objects
        self.refs = refs
        #: where every file of a store on disk lives; None for a store in memory
        self.layout = layout

    @property
    def path(self) -> Path | None:
        return self.layout.root if self.layout is not None else None

    @classmethod
    def open(cls, path: Path | str | None = None, *, create: bool = True) -> Repository:
        path = Path(path).expanduser() if path is not None else default_store_path()
        if not is_store(path):
            if not create:
                raise StoreError(f"not an osmo store: {path}", hint=f"run: osmo init {path}")
            path, _ = init_store(path)
        path = path.absolute()
        version = _check_format(path)
        layout = StoreLayout(path)
        # A version 1 store keeps version 1 packs, so that an older osmo still reads it all,
        # until `osmo repack` raises it to version 2 (upgrade_store_format).
        objects = LocalObjectStore(layout, pack_version=None if version >= 2 else 1)
        return cls(objects, LocalRefStore(layout), layout)

    @classmethod
    def memory(cls) -> Repository:
        from .backends.memory import MemoryObjectStore, MemoryRefStore  # here: tests, not the CLI

        return cls(MemoryObjectStore(), MemoryRefStore())

    def close(self) -> None:
        self.objects.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- names -----------------------------------------------------------------------

    def resolve(self, spec: str) -> ObjectId:
        """An id, a unique id prefix (>= 4 hex chars), or a ref name (``refs/...``, or a
        name under ``refs/`` such as ``evals/abc``)."""
        if spec.startswith("refs/"):
            return self._resolve_ref(spec)
        if is_oid_prefix(spec.lower()):
            try:
                return self.objects.resolve_prefix(spec)
            except ObjectNotFound:
                pass  # may still be a ref whose name looks like hex
        try:
            return self._resolve_ref("refs/" + spec)
        except (ObjectNotFound, InvalidRefName):
            raise _not_found(spec) from None

    def _resolve_ref(self, name: str) -> ObjectId:
        oid = self.refs.read(validate_ref_name(name))
        if oid is None:
            raise ObjectNotFound(name)
        return oid

    # --- moving refs ---------------------------------------------------------------

    def update_ref(
        self,
        name: str,
        new: ObjectId,
        expected: object = ANY,
        *,
        message: str = "",
        who: str | None = None,
        log: bool = True,
    ) -> None:
        """Compare-and-swap ``name`` to ``new``. ``new`` must exist; the object store is
        flushed first so the ref can never survive a crash that its objects did not.

        No ref may name a missing object, whatever runs at the same time: the target is
        protected (freshened under this writer's lease) before the ref names it, and the
        whole write holds the ref barrier shared, so it lands either before gc re-reads the
        refs (and gc keeps what the ref reaches) or after gc has deleted (and the target,
        if it is still there, was kept with everything it reaches)."""
        validate_ref_name(name)
        with self.ref_barrier():
            # A swap bound to fail must not freshen its target (and so keep it from gc): the
            # same check is made again under the ref's lock.
            if expected is not ANY and (current := self.refs.read(name)) != expected:
                raise RefConflict(name, expected, current)  # type: ignore[arg-type]
            if not self.objects.protect(new):
                raise RefTargetMissing(name, new)
            self.objects.flush()
            self.refs.update(name, new, expected, message=message, who=who, log=log)

    def ref_barrier(self, *, exclusive: bool = False) -> FileLock | contextlib.nullcontext:
        """Held shared by every ref write, and alone by gc while it re-reads the refs and
        deletes (objects_spec.md, section 7). A store in memory has no gc beside it."""
        if self.layout is None:
            return contextlib.nullcontext()
        return FileLock(
            self.layout.ref_barrier_lock,
            timeout=REF_BARRIER_TIMEOUT,
            what="the ref barrier (gc is deleting)",
            shared=not exclusive,
        )

    def delete_ref(
        self, name: str, expected: object = ANY, *, message: str = "", who: str | None = None
    ) -> None:
        self.refs.delete(name, expected, message=message, who=who)


def _not_found(spec: str) -> ObjectNotFound:
    """ObjectNotFound for what a user typed, with a hint saying why nothing matched."""
    e = ObjectNotFound(spec)
    if is_oid_prefix(spec.lower()):
        e.hint = (f"no object id starts with {spec!r}, and no ref is named so "
                  "(refs: osmo show-ref; eval configs: osmo eval cache ls)")  # fmt: skip
    elif all(c in "0123456789abcdefABCDEF" for c in spec):
        e.hint = "an id prefix needs at least 4 hex characters"
    else:
        e.hint = "give an object id (or a prefix of at least 4 hex characters) or a ref name"
    return e
