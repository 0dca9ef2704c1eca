"""What identifies an eval configuration, and the cache keys derived from it.

The config id covers everything that can change results and nothing that cannot: it is
the BLAKE3 of the canonical JSON of ``EvalConfig.identity()``. Cache keys for model calls
and rollouts are computed here too, in one place, because a key that leaves something out
returns wrong results silently (the worst bug this product can have).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import UsageError
from ..hashing import blake3_hex, canonical_json
from . import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from .fingerprint import CodeFingerprint

#: bumped whenever what a key covers changes. 2: code fingerprints cover imported user
#: modules and installed packages, the model name is always in the model identity, and
#: declared environment variables and files are keyed.
KEY_SCHEMA_VERSION = 2

#: what each schema changed, for the notice a newer osmo gives about configs of older ones
KEY_SCHEMA_CHANGES = {
    2: "cover the modules your code imports, the installed packages it uses, declared "
    "dependencies and the model name under --model-id",
}

#: the API path (under the base URL) of chat completions; a call to another one
#: (``completions``, ``embeddings``) has it in its key
CHAT_API = "chat/completions"

#: request fields that never change what a model returns (transport and bookkeeping)
_NON_IDENTITY_REQUEST_FIELDS = frozenset({"stream", "stream_options", "user", "model"})


def resolve_base_url(explicit: str | None) -> str:
    """``explicit``, else ``$OSMO_BASE_URL``, else the OpenAI API. Part of a model's
    identity, so resolved in the library rather than by each caller."""
    return explicit or os.environ.get("OSMO_BASE_URL") or DEFAULT_BASE_URL


def normalize_base_url(base_url: str) -> str:
    """The API root that ``/chat/completions`` is appended to.

    ``http://host:8000`` (no path, as vLLM and llama.cpp docs write it) becomes
    ``http://host:8000/v1``; any explicit path is kept as given (``https://host/api/v1``,
    ``https://host/openai/v1``), like the ``base_url`` of the openai client. Trailing
    slashes are dropped. Credentials, query strings and fragments are refused: the key
    belongs in ``api_key``, where it cannot leak into messages.
    """
    text = base_url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = _without_userinfo(text)
        raise UsageError(
            f"invalid model base URL {shown!r}: expected http(s)://host[:port][/path]",
            hint="for a local server write e.g. http://localhost:8000/v1",
        )
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise UsageError(
            f"model base URL {_without_userinfo(text)!r} must not contain credentials, a query "
            "or a fragment",
            hint="pass the key with --api-key or $OSMO_API_KEY",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise UsageError(f"invalid model base URL {text!r}: {exc}") from None
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _without_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


@functools.lru_cache(maxsize=64)  # part of every cache key; the URL never changes in an eval
def endpoint_identity(url: str) -> str:
    """The endpoint as identity: the API root the client will use (``http://h:8000`` and
    ``http://h:8000/v1/`` are one), scheme and host lower-cased, default ports dropped."""
    parts = urlsplit(normalize_base_url(url))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_url: str | None = None
    #: a user-chosen name for the endpoint part of the identity (e.g. a vLLM server moved
    #: to another host keeps its cache because the user says so); never the model name,
    #: which is always keyed: one id looped over models must not serve a's answers as b's
    model_id: str | None = None

    def identity(self) -> dict[str, Any]:
        if self.model_id:
            return {"model": self.name, "endpoint_id": self.model_id}
        url = endpoint_identity(self.base_url) if self.base_url else None
        return {"model": self.name, "endpoint": url}


@dataclass(frozen=True)
class CodeRef:
    """A user callable: how it was named (for display), a fingerprint of its code (the file
    defining it and every user module it imports) and the values of what it declares it
    depends on (``env:NAME`` and ``file:NAME`` to a digest, or ``unset``/``missing``)."""

    spec: str
    attr: str
    fingerprint: str
    source: str | None = None  # the defining file's path, for provenance
    depends: tuple[tuple[str, str], ...] = ()
    code: CodeFingerprint | None = field(default=None, compare=False)  # per file, provenance

    def identity(self) -> dict[str, Any]:
        # The spec as typed ("./m.py:f" vs "/abs/m.py:f") is not identity; the code is.
        out: dict[str, Any] = {"attr": self.attr, "code": self.fingerprint}
        if self.depends:
            out["depends"] = dict(self.depends)
        return out


@dataclass(frozen=True)
class SamplingParams:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def as_request_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class EvalConfig:
    model: ModelSpec | None
    agent: CodeRef | None
    eval_fns: tuple[CodeRef, ...]
    params: SamplingParams
    n: int
    max_turns: int | None
    dataset_fingerprint: str  # of the selected rows (after --offset/--limit)
    # Not identity: shown and recorded, never hashed.
    dataset_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def solver_identity(self) -> dict[str, Any]:
        """What produces a rollout: the agent's code (or plain model call), the model and
        its parameters. Eval functions are not part of it: changing one re-scores stored
        rollouts without calling the model."""
        return {
            "agent": self.agent.identity() if self.agent else None,
            "model": self.model.identity() if self.model else None,
            "params": self.params.as_request_fields(),
            "max_turns": self.max_turns,
        }

    def identity(self) -> dict[str, Any]:
        return {
            "schema": KEY_SCHEMA_VERSION,
            "solver": self.solver_identity(),
            "eval_fns": sorted((f.identity() for f in self.eval_fns), key=canonical_json),
            "n": self.n,
            "dataset": self.dataset_fingerprint,
        }

    @property
    def config_id(self) -> str:
        return blake3_hex(canonical_json(self.identity()))


def rollout_key(config: EvalConfig, row_key: str, run_index: int) -> str:
    """Identity of one rollout (the solver's run of one row, one sample index)."""
    body = {
        "schema": KEY_SCHEMA_VERSION,
        "kind": "rollout",
        "solver": config.solver_identity(),
        "row": row_key,
        "run": run_index,
    }
    return "r" + blake3_hex(canonical_json(body))


def call_key(
    model: ModelSpec,
    request: dict[str, Any],
    run_index: int,
    occurrence: int,
    api: str = CHAT_API,
) -> str:
    """Identity of one model call: the model, the request that produced the response, the
    sample index (so n samples are n calls) and how many identical requests came before it
    in the same rollout (an agent asking the same thing twice gets two samples); and the
    API asked, unless it is chat completions (whose keys never had it)."""
    req = {k: v for k, v in request.items() if k not in _NON_IDENTITY_REQUEST_FIELDS}
    body = {
        "schema": KEY_SCHEMA_VERSION,
        "kind": "call",
        "model": model.identity(),
        "request": req,
        "run": run_index,
        "occurrence": occurrence,
    }
    if api != CHAT_API:
        body["api"] = api
    return "c" + blake3_hex(canonical_json(body))
