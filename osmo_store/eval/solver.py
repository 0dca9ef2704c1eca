"""Producing rollouts: plain model calls or a user's agent, every model call going through
the store first (cached by the request that produced it), single-flighted, and retried."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import (
    AgentError,
    CorruptObject,
    MalformedObject,
    ModelError,
    NoModelConfigured,
    ObjectNotFound,
    UsageError,
)
from ..hashing import ObjectId, canonical_json
from ..objects import ObjectType, object_id
from ..repo import Repository
from .client import ChatClient
from .config import CHAT_API, EvalConfig, ModelSpec, call_key
from .endpoint import Answer, EndpointRollout, RecordingEndpoint
from .keyfilter import KeyFilter
from .state import IndexReader
from .stored import parse_call, parse_rollout

SCHEMA = 1
log = logging.getLogger(__name__)


@dataclass
class CallOutcome:
    key: str
    oid: ObjectId
    content: bytes | None  # None when reused (already stored) or already sent to be recorded
    message: dict[str, Any]
    usage: dict[str, Any]
    reused: bool
    #: the whole answer, for the endpoint to give back (None for a rollout's reused calls)
    response: dict[str, Any] | None = None
    #: the answer as the model sent it, when it was just asked (not streamed): the endpoint
    #: passes these bytes on rather than encode ``response`` again
    body: bytes | None = None


@dataclass
class Rollout:
    key: str
    oid: ObjectId
    content: bytes | None  # None when reused
    messages: list[dict[str, Any]]
    usage: dict[str, Any]
    calls: list[CallOutcome] = field(default_factory=list)
    reused: bool = False


def _add_usage(total: dict[str, int], usage: dict[str, Any]) -> None:
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        v = usage.get(k)
        if isinstance(v, int):
            total[k] = total.get(k, 0) + v


class Hit(NamedTuple):
    oid: ObjectId
    content: bytes
    pending: bool  # made by this session and maybe not recorded yet: whoever uses it must
    # record the content too (the run that made it may be recorded later, or never)


class StoreLookup:
    """Finds stored call/rollout blobs by key: results of this session not yet committed
    first, then what this session has committed, then the config's own ``cache`` manifest
    (``own``: what its earlier sessions recorded, even where a crash kept them out of the
    index), then the shared index (unless ``shared`` is false: a config started over with
    ``--fresh``). Thread-safe.

    Memory does not grow with the eval: a result's content is held only until its commit
    (``committed``); after that its key costs a few bits in a filter, and the rare lookup
    the filter lets through reads the config's ``cache`` manifest as last committed.
    ``expected`` (how many keys the session may record) sizes that filter."""

    def __init__(
        self,
        repo: Repository,
        own: ObjectId | None = None,
        *,
        shared: bool = True,
        skip: frozenset[ObjectId] = frozenset(),
        expected: int = 0,
    ) -> None:
        self.repo = repo
        self._readers = [IndexReader(repo, only=own)] if own is not None else []
        if shared:
            self._readers.append(IndexReader(repo))
        self._skip = skip  # ids of blobs not to take from the store (only from this session)
        self._pending: dict[str, tuple[ObjectId, bytes]] = {}
        self._recorded = KeyFilter(expected)
        self._latest: IndexReader | None = None  # the cache manifest as last committed
        self._lock = threading.Lock()

    def _stored_ids(self, key: str) -> list[ObjectId]:
        """Stored candidates for ``key``, best first (called under the lock)."""
        readers = self._readers
        if self._latest is not None and key in self._recorded:
            readers = [self._latest, *readers]
        out: list[ObjectId] = []
        for reader in readers:
            oid = reader.get(key)
            if oid is not None and oid not in self._skip and oid not in out:
                out.append(oid)
        return out

    def refresh(self) -> None:
        """Read the shared index again now: another eval has just recorded something."""
        with self._lock:
            for reader in self._readers:
                if reader.shared:
                    reader.refresh()

    def remember(self, key: str, oid: ObjectId, content: bytes) -> None:
        with self._lock:
            self._pending[key] = (oid, content)

    def committed(self, cache: ObjectId, keys: Iterable[str]) -> None:
        """``keys`` are recorded in the config's ``cache`` manifest ``cache``: look for them
        there from now on, and let go of their content."""
        with self._lock:
            # The manifest first, then the content goes: a lookup always finds one of them.
            if self._latest is None:
                self._latest = IndexReader(self.repo, only=cache)
            self._latest.root = cache
            for key in keys:
                self._recorded.add(key)
                self._pending.pop(key, None)

    def find(self, key: str) -> Hit | None:
        with self._lock:
            hit = self._pending.get(key)
            if hit is not None:
                return Hit(hit[0], hit[1], True)
            candidates = self._stored_ids(key)
        for oid in candidates:
            try:
                return Hit(oid, self.repo.objects.get_typed(oid, ObjectType.BLOB), False)
            except ObjectNotFound:
                continue  # listed but gone (collected, or never arrived by sync): a miss
            except (CorruptObject, MalformedObject) as e:
                log.warning("osmo: a stored result is damaged (%s): computing it again", e)
        return None

    def find_id(self, key: str) -> tuple[ObjectId, bytes | None] | None:
        """The id for ``key``, with the content if it is pending (see ``Hit``)."""
        with self._lock:
            hit = self._pending.get(key)
            if hit is not None:
                return hit
            candidates = self._stored_ids(key)
        return (candidates[0], None) if candidates else None


class ModelCaller:
    """The one path every model call takes: store lookup, single flight, real call."""

    def __init__(
        self, lookup: StoreLookup, client: ChatClient | None, model: ModelSpec | None
    ) -> None:
        self.lookup = lookup
        self.client = client
        self.model = model
        self._inflight: dict[str, Future[CallOutcome]] = {}
        self._lock = threading.Lock()
        # Counted apart, so that what was paid for is visible: answered calls, the attempts
        # beyond each call's first, the attempts that got no answer (each one a request the
        # endpoint may have billed), and the calls that failed for good.
        self.calls_made = 0
        self.retried_attempts = 0
        self.failed_attempts = 0
        self.failed_calls = 0
        # Set for agents: each new answer goes to the recorder at once (then the outcome
        # carries no content), so a rollout cut short by a crash does not pay for it again.
        self.record_now: Callable[[CallOutcome], None] | None = None

    def call(
        self, request: dict[str, Any], run_index: int, occurrence: int, api: str = CHAT_API
    ) -> CallOutcome:
        if self.model is None or self.client is None:
            raise NoModelConfigured()
        request = {"model": self.model.name, **request}
        key = call_key(self.model, request, run_index, occurrence, api)
        hit = self.lookup.find(key)
        if hit is not None and (reused := self._outcome(key, hit)) is not None:
            return reused
        with self._lock:
            fut = self._inflight.get(key)
            owner = fut is None
            if owner:
                fut = self._inflight[key] = Future()
        if not owner:
            return fut.result()  # identical request in flight: share its answer
        try:
            outcome = self._real_call(key, request, api)
            fut.set_result(outcome)
            return outcome
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _real_call(self, key: str, request: dict[str, Any], api: str) -> CallOutcome:
        started = time.time()
        try:
            result = self.client.chat(request, api)  # type: ignore[union-attr]
        except ModelError as e:
            with self._lock:
                self.failed_calls += 1
                self.failed_attempts += e.attempts
                self.retried_attempts += e.attempts - 1
            raise
        with self._lock:
            self.calls_made += 1
            self.failed_attempts += result.attempts - 1
            self.retried_attempts += result.attempts - 1
        body = {
            "schema": SCHEMA,
            "kind": "call",
            "key": key,
            "request": request,
            "response": result.response,
            "latency_s": round(result.latency_s, 6),
            "attempts": result.attempts,
            "started": round(started, 3),
        }
        if api != CHAT_API:
            body["api"] = api
        content = canonical_json(body)
        oid = object_id(ObjectType.BLOB, content)
        self.lookup.remember(key, oid, content)
        outcome = CallOutcome(
            key, oid, content, result.message, result.usage or {}, False, result.response,
            result.body,
        )  # fmt: skip
        if self.record_now is not None:
            self.record_now(outcome)
            outcome = dataclasses.replace(outcome, content=None)
        return outcome

    @staticmethod
    def _outcome(key: str, hit: Hit) -> CallOutcome | None:
        """The stored answer; None (a miss) for a blob that is no model call."""
        try:
            body = parse_call(hit.content, hit.oid)
        except MalformedObject as e:
            log.warning("osmo: a stored result is damaged (%s): computing it again", e)
            return None
        response = body.get("response") or {}
        message = (response.get("choices") or [{}])[0].get("message") or {}
        content = hit.content if hit.pending else None
        usage = response.get("usage") or {}
        return CallOutcome(key, hit.oid, content, message, usage, True, response)


class AgentClient:
    """What an agent gets as ``client``: ``chat()`` goes through the store (cached, single-
    flighted, retried) and records every call for the rollout's provenance. ``base_url``
    and ``api_key`` are the same path for an SDK of the agent's choosing (the eval's
    recording endpoint); ``model`` is the model name to ask for."""

    def __init__(
        self,
        caller: ModelCaller,
        run_index: int,
        params: dict[str, Any],
        max_turns: int | None,
        *,
        single_call: bool = False,
        calls: list[CallOutcome] | None = None,
        endpoint: RecordingEndpoint | None = None,
    ) -> None:
        self._single_call = single_call
        self._caller = caller
        self._run_index = run_index
        if params.get("seed") is not None and run_index:
            # Sample i asks with seed + i: n samples that differ, and each replays.
            params = {**params, "seed": params["seed"] + run_index}
        self._params = params
        self.max_turns = max_turns
        self.calls: list[CallOutcome] = [] if calls is None else calls
        self._seen: dict[bytes, int] = {}
        self._seen_lock = threading.Lock()  # an agent may call from several threads
        self.endpoint: EndpointRollout | None = (
            endpoint.rollout(self._complete) if endpoint is not None else None
        )

    @property
    def run_index(self) -> int:
        """The sample index of this rollout (0 to n - 1)."""
        return self._run_index

    @property
    def model(self) -> str | None:
        """The eval's model name (``--model``); the endpoint asks for it whatever an SDK
        names, since it is part of every call's key."""
        return self._caller.model.name if self._caller.model is not None else None

    @property
    def base_url(self) -> str:
        """This rollout's base URL at the eval's recording endpoint (``.../v1``)."""
        return self._endpoint().base_url

    @property
    def api_key(self) -> str:
        """The eval's endpoint key (not the model's: that never reaches the agent)."""
        return self._endpoint().api_key

    def _endpoint(self) -> EndpointRollout:
        if self.endpoint is None:
            raise UsageError("this client has no endpoint: only agents run by an eval get one")
        return self.endpoint

    def chat(self, messages: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
        """Send ``messages`` (plus any request fields, e.g. ``tools``) to the model; returns
        the assistant message as a dict (``content``, maybe ``tool_calls``)."""
        return dict(self._ask({**overrides, "messages": messages}).message)

    def _complete(self, api: str, fields: dict[str, Any], transport: dict[str, Any]) -> Answer:
        """The endpoint's path: request fields as an SDK sent them (the model and stream
        flags taken out) to the whole response, asked and keyed exactly as ``chat`` would
        ask it; ``transport`` (``stream``) is sent upstream but changes no key. The eval's
        sampling parameters are for chat: other APIs get the fields as sent."""
        outcome = self._ask(fields, transport, api)
        assert outcome.response is not None
        return Answer(outcome.response, outcome.body)

    def _ask(
        self,
        fields: dict[str, Any],
        transport: dict[str, Any] | None = None,
        api: str = CHAT_API,
    ) -> CallOutcome:
        request = {**self._params, **fields} if api == CHAT_API else fields
        if self._single_call:
            occurrence = 0  # the plain model path: one call per rollout, nothing to count
        else:
            fingerprint = canonical_json(request)
            if api != CHAT_API:
                fingerprint = api.encode() + fingerprint
            with self._seen_lock:
                occurrence = self._seen.get(fingerprint, 0)
                self._seen[fingerprint] = occurrence + 1
        if transport:
            request = {**request, **transport}
        outcome = self._caller.call(request, self._run_index, occurrence, api)
        self.calls.append(outcome)
        return outcome

    async def achat(self, messages: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
        # In a daemon thread of its own, not asyncio.to_thread: the loop's executor threads
        # hold the interpreter's exit until their call returns, so an eval aborted with
        # calls in flight would not exit.
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        context = contextvars.copy_context()

        def settle(result: Any, error: BaseException | None) -> None:
            if answer.done():  # the agent stopped waiting (cancelled)
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result)

        def call() -> None:
            try:
                result, error = context.run(self.chat, messages, **overrides), None
            except BaseException as e:  # noqa: BLE001 - raised in the agent, where it awaits
                result, error = None, e
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=call, name="osmo-agent-call", daemon=True).start()
        return await answer


def _validate_messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in value
    ):
        raise AgentError(
            f"the agent returned {type(value).__name__}, expected a list of message dicts "
            "with a 'role'"
        )
    return value


class Solver:
    """Runs (or reuses) the rollout of one row and run index."""

    def __init__(
        self,
        config: EvalConfig,
        lookup: StoreLookup,
        caller: ModelCaller,
        agent: Callable[..., Any] | None,
        endpoint: RecordingEndpoint | None = None,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.lookup = lookup
        self.caller = caller
        self.agent = agent
        self.repo = lookup.repo
        self.params = config.params.as_request_fields()

    def reuse(self, key: str) -> Rollout | None:
        hit = self.lookup.find(key)
        if hit is None:
            return None
        try:
            body = parse_rollout(hit.content, hit.oid)
        except MalformedObject as e:
            log.warning("osmo: a stored result is damaged (%s): computing it again", e)
            return None
        calls = []
        has = self.repo.objects.has
        for call in body.get("calls") or []:
            # Name the call blob this store holds for the key (the rollout's own, unless a
            # merge kept another for the same key); skip it if neither is here any more.
            found = self.lookup.find_id(call["key"])
            if found is not None and found[1] is None and not has(found[0]):
                found = None
            if found is None and has(call["id"]):
                found = (call["id"], None)
            if found is not None:
                calls.append(CallOutcome(call["key"], found[0], found[1], {}, {}, True))
        content = hit.content if hit.pending else None
        messages, usage = body["messages"], body.get("usage") or {}
        return Rollout(key, hit.oid, content, messages, usage, calls, True)

    def run(
        self,
        key: str,
        row_data: dict[str, Any],
        messages: list[dict[str, Any]],
        run_index: int,
        calls: list[CallOutcome] | None = None,
    ) -> Rollout:
        """The rollout; ``calls`` (if given) gets each model call as it is made, so a caller
        knows them even if the rollout fails."""
        started = time.time()
        client = AgentClient(
            self.caller, run_index, self.params, self.config.max_turns,
            single_call=self.agent is None, calls=calls,
            endpoint=self.endpoint if self.agent is not None else None,
        )  # fmt: skip
        if self.agent is None:
            reply = client.chat(messages)
            final = [*messages, reply]
        else:
            with client.endpoint or contextlib.nullcontext():
                result = self.agent([dict(m) for m in messages], row_data, client)
                if inspect.isawaitable(result):
                    result = asyncio.run(_await(result))
            final = _validate_messages(result)
        usage: dict[str, int] = {}
        for c in client.calls:
            _add_usage(usage, c.usage)
        body = {
            "schema": SCHEMA,
            "kind": "rollout",
            "key": key,
            "messages": final,
            "usage": usage,
            "calls": [{"key": c.key, "id": c.oid} for c in client.calls],
            "latency_s": round(time.time() - started, 6),
        }
        content = canonical_json(body)
        oid = object_id(ObjectType.BLOB, content)
        self.lookup.remember(key, oid, content)
        return Rollout(key, oid, content, final, usage, client.calls, False)


async def _await(awaitable: Any) -> Any:
    return await awaitable
