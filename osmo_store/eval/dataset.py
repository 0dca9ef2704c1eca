"""Load an eval dataset (.jsonl, .json, .csv, .parquet) into rows identified by content.

Every row becomes a :class:`Row` holding OpenAI chat ``messages``, an optional
``ground_truth`` and every other column as ``metadata``. A row's ``key`` hashes exactly
those three things and nothing about where the row sits in the file, so editing, adding
or reordering rows re-runs only what changed (DESIGN.md, "Reuse").

Columns, matched case-insensitively and ignoring surrounding whitespace:

- ``user_prompt`` (a string) or ``messages`` (a list of ``{role, content, ...}``; a JSON
  string is decoded first, which is how CSV and string parquet columns carry it). Exactly
  one of the two must be present.
- ``system_prompt`` (optional string): a non-empty value becomes the first message. With a
  ``messages`` column it is prepended, and a row that already has a system message is an
  error rather than a guess about which one wins.
- ``ground_truth`` (optional, any JSON value; None when the column is absent).

Format rules:

- jsonl: one object per line, blank lines skipped, NaN/Infinity rejected (not JSON).
  Locations are ``file:LINE`` (1-based).
- json: a top-level array of objects, or an object with exactly one list-valued key such
  as ``{"version": 2, "data": [...]}``. Locations are ``file item N`` (0-based index).
- csv: UTF-8 (a BOM is ignored), first non-blank record is the header, duplicated header
  names are an error, and so are a stray quote inside a field and a quote never closed.
  Values stay strings, except that an empty cell (and a cell missing from a short record)
  is None: CSV cannot tell "" from "no value", and None is what an absent ground truth or
  system prompt means everywhere else. Hence an empty user_prompt cell is an error.
  Locations are ``file:LINE``, the record's first line, header = line 1.
- parquet (needs pyarrow): values become JSON values; NaN becomes None (pandas writes
  missing values as NaN), dates/times become ISO strings, decimals exact strings, durations
  seconds, binary must be UTF-8 text. Locations are ``file row N`` (0-based).

In every format, message fields whose value is null are dropped (except ``content``): the
OpenAI API reads null as absent, and a parquet struct column puts every field on every
message, so without this the same conversation would get a different key per format.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from ..errors import DatasetError, UsageError
from ..hashing import blake3_hex, canonical_json
from .rowkeys import RowKeys

KEY_LEN = 32
ROLES = ("system", "user", "assistant", "tool")
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
PARQUET_HINT = "pip install 'osmo-store[parquet]'"

#: a dataset's rows: ``reader(path, shown)`` gives ``(where, row object)`` pairs in order
Reader = Callable[[Path, str], Iterator[tuple[str, Any]]]

_BOM = b"\xef\xbb\xbf"
_PARQUET_BATCH_ROWS = 8192
_COLUMN_NAMES = ("user_prompt", "messages", "system_prompt", "ground_truth")
_MAX_NAMES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Row:
    index: int
    """0-based position among all data rows of the file (before offset/limit)."""
    where: str
    data: dict[str, Any]
    messages: list[dict[str, Any]]
    ground_truth: Any
    metadata: dict[str, Any]
    key: str


@dataclass
class Dataset:
    """A loaded dataset: every row's key, not the rows. The selected rows (``offset`` to
    ``stop``) are read from the file again as an eval runs them (``iter_rows``), so an
    eval holds only the rows in flight, whatever the file's size."""

    path: Path
    shown: str  # the path as given, for messages
    keys: RowKeys  # of every row in the file, in order
    offset: int
    stop: int  # the selection is rows offset..stop-1
    fingerprint: str  # of every row in the file (provenance)
    #: of the selected rows, by content: a config's dataset identity, so a copy of the
    #: file, or the same rows at another path, is the same. Order is not identity: the same
    #: rows reordered give the same results.
    selection_fingerprint: str
    #: what reads the rows (again) from ``path``: a file's reader, or the rows given as
    #: Python objects (``records``)
    source: Reader

    @property
    def total_rows(self) -> int:
        return len(self.keys)

    @property
    def selected_rows(self) -> int:
        return self.stop - self.offset

    def selected_keys(self) -> Iterator[str]:
        for index in range(self.offset, self.stop):
            yield self.keys[index]

    def iter_rows(self) -> Iterator[Row]:
        """The selected rows, read and checked again: a row whose content is not what was
        loaded (the file changed since) is a ``DatasetError``, never a run under the key of
        other content."""
        reader = self.source
        collector = _RowCollector(self.shown)
        index = self.offset
        with closing(reader(self.path, self.shown)) as source:
            for position, (where, obj) in enumerate(source):
                if position < self.offset:
                    continue
                if index == self.stop:
                    return
                key = self.keys[index]
                row = collector.row(index, where, obj, key)
                if row.key != key:
                    raise _changed(self.shown, where)
                yield row
                index += 1
        if index < self.stop:
            raise _changed(self.shown, None)

    @property
    def rows(self) -> list[Row]:
        """Every selected row (read from the file again; an eval uses ``iter_rows``)."""
        return list(self.iter_rows())


def load_dataset(path: str | Path, *, limit: int | None = None, offset: int = 0) -> Dataset:
    """Read and check every row of ``path`` (all are validated and keyed, since the
    fingerprint covers the whole file) and select ``rows[offset:offset + limit]``.

    Raises :class:`DatasetError` for bad files or rows, ``UsageError`` for a negative
    ``limit``/``offset``."""
    shown = str(path)
    given = Path(path)
    resolved = given.resolve()
    if not resolved.exists():
        raise DatasetError("no such file", path=shown)
    if resolved.is_dir():
        raise DatasetError(f"is a directory, expected a {'/'.join(SUFFIXES)} file", path=shown)
    # The extension as typed decides the format, so a symlink to an unnamed blob works.
    reader = _READERS.get(given.suffix.lower())
    if reader is None:
        raise DatasetError(
            f"unsupported file type {given.suffix or '(no extension)'!r}",
            path=shown,
            hint=f"use one of {', '.join(SUFFIXES)}",
        )
    return select_rows(reader, resolved, shown, limit=limit, offset=offset)


def select_rows(
    reader: Reader, path: Path, shown: str, *, limit: int | None, offset: int
) -> Dataset:
    """Read, check and key every row ``reader`` gives, and select ``rows[offset:offset +
    limit]``; ``path`` is passed to the reader and recorded, ``shown`` names the rows in
    messages. ``reader`` must give the same rows each time it is called."""
    if offset < 0:
        raise UsageError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")
    collector = _RowCollector(shown)
    keys = RowKeys()
    stop = None if limit is None else offset + limit
    # canonical_json of the key list, hashed as the keys come (a list of strings).
    everything = _ListHash()
    with closing(reader(path, shown)) as source:
        for index, (where, obj) in enumerate(source):
            key = keys.add(collector.row(index, where, obj, None).key)
            everything.add(key)
    total = len(keys)
    if total == 0:
        raise DatasetError("dataset has no rows", path=shown)
    if offset >= total:
        raise DatasetError(f"offset {offset} is past the last row ({total} rows)", path=shown)
    return Dataset(
        path=path,
        shown=shown,
        keys=keys,
        offset=offset,
        stop=total if stop is None else min(stop, total),
        fingerprint=everything.hexdigest(),
        selection_fingerprint=_set_fingerprint(
            keys, offset, total if stop is None else min(stop, total)
        ),
        source=reader,
    )


def row_from_data(data: dict[str, Any], where: str = "a stored row") -> Row:
    """A row rebuilt from its data as a config stores it (the dataset file's object), with
    the messages, ground truth and metadata an eval function is given."""
    return _RowCollector(where).row(0, where, data, None)


def _set_fingerprint(keys: RowKeys, start: int, stop: int) -> str:
    """canonical_json of the sorted keys of rows start..stop-1, hashed: their set."""
    selection = _ListHash()
    for key in sorted(keys[i] for i in range(start, stop)):
        selection.add(key)
    return selection.hexdigest()


def _changed(shown: str, where: str | None) -> DatasetError:
    return DatasetError(
        "the file changed since the eval loaded it: "
        + ("this row is not the one loaded" if where else "rows are missing"),
        path=shown,
        where=where,
        hint="run the eval again on the file as it is now",
    )


class _ListHash:
    """BLAKE3 of ``canonical_json(list_of_strings)``, fed one string at a time."""

    def __init__(self) -> None:
        self._h = blake3.blake3(b"[")
        self._first = True

    def add(self, text: str) -> None:
        self._h.update(canonical_json(text) if self._first else b"," + canonical_json(text))
        self._first = False

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(b"]")
        return h.hexdigest()


@dataclass(frozen=True)
class _Columns:
    """Which original column plays which part, for one set of column names."""

    user_prompt: str | None
    messages: str | None
    system_prompt: str | None
    ground_truth: str | None
    metadata: tuple[str, ...]


class _RowCollector:
    """Turns raw row objects into rows keyed by content (the key of a repeat is numbered by
    ``RowKeys``, which sees every row)."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self._columns: dict[tuple[str, ...], _Columns] = {}

    def row(self, index: int, where: str, obj: Any, key: str | None) -> Row:
        """The row, keyed by the hash of its content; by ``key`` instead (the key given at
        load time, "hash" or "hash-N") if that is the key of the same content."""
        if not isinstance(obj, dict):
            raise DatasetError(
                f"expected a JSON object, got {_json_type(obj)}", path=self.shown, where=where
            )
        names = tuple(obj)
        # Rows of one file nearly always share their column names; match them once.
        cols = self._columns.get(names)
        if cols is None:
            cols = self._columns[names] = _match_columns(names, self.shown, where)
        messages = self._messages(obj, cols, where)
        ground_truth = obj[cols.ground_truth] if cols.ground_truth is not None else None
        metadata = {name: obj[name] for name in cols.metadata}
        content = {"messages": messages, "ground_truth": ground_truth, "metadata": metadata}
        digest = blake3_hex(canonical_json(content))[:KEY_LEN]
        if key is None or not key.startswith(digest):
            key = digest
        return Row(index, where, obj, messages, ground_truth, metadata, key)

    def _messages(self, obj: dict[str, Any], cols: _Columns, where: str) -> list[dict[str, Any]]:
        system = obj[cols.system_prompt] if cols.system_prompt is not None else None
        if system is not None and not isinstance(system, str):
            raise self._error(f"system_prompt must be a string, got {_json_type(system)}", where)
        if cols.messages is not None:
            messages = _check_messages(obj[cols.messages], self.shown, where)
            if system:
                if any(m["role"] == "system" for m in messages):
                    raise self._error(
                        "both a system_prompt and a system message in messages; keep one", where
                    )
                messages.insert(0, {"role": "system", "content": system})
            return messages
        assert cols.user_prompt is not None  # _match_columns guarantees one of the two
        prompt = obj[cols.user_prompt]
        if not isinstance(prompt, str):
            raise self._error(f"user_prompt must be a string, got {_json_type(prompt)}", where)
        user = {"role": "user", "content": prompt}
        return [{"role": "system", "content": system}, user] if system else [user]

    def _error(self, reason: str, where: str) -> DatasetError:
        return DatasetError(reason, path=self.shown, where=where)


def _match_columns(names: Iterable[str], shown: str, where: str) -> _Columns:
    found: dict[str, str] = {}
    metadata: list[str] = []
    for name in names:
        canon = name.strip().lower()
        if canon not in _COLUMN_NAMES:
            metadata.append(name)
        elif canon in found:
            raise DatasetError(
                f"columns {found[canon]!r} and {name!r} both mean {canon}; keep one",
                path=shown,
                where=where,
            )
        else:
            found[canon] = name
    if "user_prompt" in found and "messages" in found:
        raise DatasetError(
            f"both {found['user_prompt']!r} and {found['messages']!r} columns are present; "
            "a row needs exactly one of user_prompt or messages",
            path=shown,
            where=where,
        )
    if "user_prompt" not in found and "messages" not in found:
        listed = [*found.values(), *metadata]
        shown_names = ", ".join(repr(n) for n in listed[:_MAX_NAMES_SHOWN])
        more = (
            f" and {len(listed) - _MAX_NAMES_SHOWN} more" if len(listed) > _MAX_NAMES_SHOWN else ""
        )
        raise DatasetError(
            f"no user_prompt or messages column (columns found: {shown_names or 'none'}{more})",
            path=shown,
            where=where,
            hint="name the prompt column user_prompt, or give OpenAI chat messages in messages",
        )
    return _Columns(
        user_prompt=found.get("user_prompt"),
        messages=found.get("messages"),
        system_prompt=found.get("system_prompt"),
        ground_truth=found.get("ground_truth"),
        metadata=tuple(metadata),
    )


def _check_messages(value: Any, shown: str, where: str) -> list[dict[str, Any]]:
    """Validate OpenAI chat messages and return a normalized copy (null fields dropped)."""

    def fail(reason: str) -> DatasetError:
        return DatasetError(reason, path=shown, where=where)

    if isinstance(value, str):
        try:
            value = _DECODER.decode(value)
        except ValueError as e:
            raise fail(f"messages is a string but not valid JSON: {e}") from None
    if not isinstance(value, list) or not value:
        raise fail(f"messages must be a non-empty list of messages, got {_json_type(value)}")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail(f"messages[{i}] must be an object, got {_json_type(item)}")
        message = {k: v for k, v in item.items() if v is not None or k == "content"}
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise fail(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        content = message.get("content")
        if content is None:
            if role != "assistant" or not message.get("tool_calls"):
                raise fail(
                    f"messages[{i}].content is missing (only an assistant message with "
                    "tool_calls may have no content)"
                )
        elif not isinstance(content, (str, list)):
            raise fail(
                f"messages[{i}].content must be a string or a list of parts, "
                f"got {_json_type(content)}"
            )
        messages.append(message)
    return messages


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every row: it keeps the C scanner and rejects NaN/Infinity, which
# canonical_json could not hash anyway.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _open(path: Path, shown: str) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as e:
        raise DatasetError(f"cannot read: {e.strerror or e}", path=shown) from None


def _decode_json(text: str, shown: str, lineno: int | None) -> Any:
    """Decode one JSON document. ``lineno`` is the line a one-line document (a jsonl row)
    sits on; None for a whole file, where only syntax errors can be placed at a line."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        where = f"{shown}:{lineno if lineno is not None else e.lineno}"
        reason = f"invalid JSON: {e.msg} (column {e.colno})"
        raise DatasetError(reason, path=shown, where=where) from None
    except ValueError as e:  # NaN/Infinity, from _reject_constant
        where = None if lineno is None else f"{shown}:{lineno}"
        raise DatasetError(str(e), path=shown, where=where) from None


def _utf8_lines(f: BinaryIO, shown: str) -> Iterator[tuple[int, str]]:
    """Physical lines, decoded one at a time so a bad byte is reported at its own line
    (a text-mode file decodes in chunks and fails somewhere ahead of the reader)."""
    for lineno, raw in enumerate(f, 1):
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            where = f"{shown}:{lineno}"
            raise DatasetError(f"not valid UTF-8 ({e.reason})", path=shown, where=where) from None


def _jsonl_rows(path: Path, shown: str) -> Iterator[tuple[str, Any]]:
    with _open(path, shown) as f:
        for lineno, line in _utf8_lines(f, shown):
            if line.strip():
                yield f"{shown}:{lineno}", _decode_json(line, shown, lineno)


def _json_rows(path: Path, shown: str) -> Iterator[tuple[str, Any]]:
    with _open(path, shown) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DatasetError("not valid UTF-8", path=shown, where=f"{shown}:{line}") from None
    doc = _decode_json(text, shown, None)
    if isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(
                "expected an array of rows, or an object with exactly one list-valued key "
                f'such as {{"data": [...]}} (list-valued keys: {lists or "none"})',
                path=shown,
            )
        doc = doc[lists[0]]
    elif not isinstance(doc, list):
        raise DatasetError(f"expected an array of rows, got {_json_type(doc)}", path=shown)
    for i, item in enumerate(doc):
        yield f"{shown} item {i}", item


def _csv_rows(path: Path, shown: str) -> Iterator[tuple[str, Any]]:
    with _open(path, shown) as f:
        # csv.reader over our own decoded lines: line_num then counts physical lines, so a
        # record's first line is line_num + 1 before reading it, even across blank lines
        # and quoted fields that span lines.
        # strict: a stray quote is an error, not text; a quote never closed is an error,
        # not one field holding the rest of the file.
        reader = csv.reader((line for _, line in _utf8_lines(f, shown)), strict=True)
        header: list[str] | None = None
        while True:
            first_line = reader.line_num + 1
            try:
                record = next(reader, None)
            except csv.Error as e:
                if "end of data" in str(e):
                    why, where = "a quoted field is never closed", f"{shown}:{first_line}"
                else:
                    why, where = str(e), f"{shown}:{reader.line_num}"
                raise DatasetError(f"malformed CSV: {why}", path=shown, where=where) from None
            if record is None:
                return
            where = f"{shown}:{first_line}"
            if not record:
                continue
            if header is None:
                header = _check_header(record, shown, where)
                continue
            if len(record) > len(header):
                raise DatasetError(
                    f"{len(record)} fields but the header has {len(header)}",
                    path=shown,
                    where=where,
                )
            row: dict[str, Any] = dict.fromkeys(header)
            # A short record leaves its missing cells None, like an empty cell.
            for name, cell in zip(header, record, strict=False):
                if cell:
                    row[name] = cell
            yield where, row


def _check_header(header: list[str], shown: str, where: str) -> list[str]:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DatasetError(f"duplicated column name {name!r}", path=shown, where=where)
        seen.add(name)
    # Report a header without a prompt column at line 1, not at the first data row.
    _match_columns(header, shown, where)
    return header


def _parquet_rows(path: Path, shown: str) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DatasetError(
            "reading parquet needs pyarrow, which is not installed", path=shown, hint=PARQUET_HINT
        ) from None
    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise DatasetError(f"not a readable parquet file: {e}", path=shown) from None
    seen: set[str] = set()
    for name in parquet.schema_arrow.names:
        if name in seen:
            raise DatasetError(f"duplicated column name {name!r}", path=shown)
        seen.add(name)
    index = 0
    batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except (pyarrow.ArrowException, OSError) as e:
            where = f"{shown} row {index}"
            raise DatasetError(f"cannot read parquet data: {e}", path=shown, where=where) from None
        if batch is None:
            return
        for record in batch.to_pylist():
            where = f"{shown} row {index}"
            row = {name: _json_value(v, shown, where, name) for name, v in record.items()}
            yield where, row
            index += 1


def _json_value(value: Any, shown: str, where: str, column: str) -> Any:
    """A parquet (or numpy) value as the JSON value it stands for."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise DatasetError(
                f"column {column!r}: {value} is not a JSON number", path=shown, where=where
            )
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v, shown, where, column) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # map columns come back as lists of (key, value)
        return [_json_value(v, shown, where, column) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(
                f"column {column!r}: binary value is not UTF-8 text", path=shown, where=where
            ) from None
    if type(value).__module__ == "numpy":  # scalars and arrays both have tolist()
        return _json_value(value.tolist(), shown, where, column)
    raise DatasetError(
        f"column {column!r}: {type(value).__name__} values are not supported",
        path=shown,
        where=where,
    )


_READERS: dict[str, Reader] = {
    ".jsonl": _jsonl_rows,
    ".json": _json_rows,
    ".csv": _csv_rows,
    ".parquet": _parquet_rows,
}
