"""Every path of a local store, in one place (objects_spec.md, "Store layout").

No other module joins a path under a store's root: they ask a ``StoreLayout``. Ref and lock
names are validated by their callers (``validate_ref_name``, ids parsed at the boundary)
before they reach here, which is what keeps a name from reaching outside the store.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_FILE = "osmo.json"
# A reflog lives at logs/<name>~log: "~" cannot occur in a ref name, so the log of refs/a
# never collides with the folder holding the logs of refs/a/b (kept after refs/a/b is gone).
REFLOG_SUFFIX = "~log"


class StoreLayout:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.store_file = self.root / STORE_FILE
        #: the store's settings (remotes), see ``sync.remotes``
        self.config_file = self.root / "config.json"
        self.objects = self.root / "objects"
        self.packs = self.objects / "pack"
        self.refs = self.root / "refs"
        self.logs = self.root / "logs"
        self.locks = self.root / "locks"
        self.leases = self.root / "leases"
        #: eval journals (``eval/journal.py``), one folder per config
        self.journals = self.root / "journal"
        self.maintenance_lock = self.lock("maintenance")
        #: ref writes hold it shared; gc holds it alone while it re-reads the refs and deletes
        self.ref_barrier_lock = self.lock("ref-barrier")
        self.config_lock = self.lock("config")

    def subdirs(self) -> tuple[Path, ...]:
        """The folders every store has, parents first."""
        return (self.objects, self.packs, self.refs, self.logs, self.locks, self.leases)

    def loose(self, oid: str) -> Path:
        return self.objects / oid[:2] / oid[2:]

    def fanout_dir(self, prefix: str) -> Path:
        return self.objects / prefix[:2]

    def ref(self, name: str) -> Path:
        """A ref's file: its name (``refs/...``) under the root, as in git."""
        return self.root / name

    def ref_name(self, path: str | Path) -> str:
        """The ref name of a file under ``refs/`` (the inverse of ``ref``)."""
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def reflog(self, name: str) -> Path:
        return self.logs / (name + REFLOG_SUFFIX)

    def reflog_name(self, path: str | Path) -> str:
        """The ref name of a reflog file (the inverse of ``reflog``)."""
        rel = os.path.relpath(path, self.logs).replace(os.sep, "/")
        return rel[: -len(REFLOG_SUFFIX)]

    def journal(self, config_id: str) -> Path:
        """The journal folder of one eval config (an id, validated by the caller)."""
        return self.journals / config_id

    def lock(self, name: str) -> Path:
        """The lock file of ``name``: a ref (``refs/...``), ``evals/<config id>``,
        ``maintenance``, ``config``. Ref names start with ``refs/``, so they never meet the
        others."""
        return self.locks / f"{name}.lock"

    @property
    def rollout_claims(self) -> Path:
        """The file whose bytes evals lock to claim rollouts in flight (``eval.claims``)."""
        return self.lock("rollouts")
