"""Where a result came from, recorded with every run record: osmo and Python versions,
host, user, the command line (without secrets), the dataset, and the user code with its
fingerprint, each file and installed package it covers, and its git state."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

from .. import __version__
from ..refs import default_who
from .code import git_state
from .config import EvalConfig
from .dataset import Dataset


def provenance(config: EvalConfig, dataset: Dataset, started: float) -> dict[str, Any]:
    code = {}
    for ref in ([config.agent] if config.agent else []) + list(config.eval_fns):
        code[ref.spec] = {
            "fingerprint": ref.fingerprint,
            "source": ref.source,
            "git": git_state(ref.source),
            **(ref.code.describe() if ref.code else {"files": {}, "packages": {}}),
            "depends": dict(ref.depends),
        }
    return {
        "osmo_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": default_who(),
        "pid": os.getpid(),
        "started": round(started, 3),
        "argv": redact_argv(sys.argv[1:]),
        "dataset": {
            "path": str(dataset.path),
            "fingerprint": dataset.fingerprint,
            "rows_total": dataset.total_rows,
            "rows_selected": dataset.selected_rows,
        },
        "code": code,
    }


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as provenance, without secrets."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append("***")
            hide = False
        elif a == "--api-key":
            out.append(a)
            hide = True
        elif a.startswith("--api-key="):
            out.append("--api-key=***")
        else:
            out.append(a)
    return out
