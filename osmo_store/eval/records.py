"""A dataset given as Python objects rather than a file: a list of dicts (one per row, the
columns of ``dataset``'s files) or a pandas DataFrame. Rows are keyed by content exactly as
a file's rows are, so the same rows make the same config whether they come from
``data.jsonl`` or from ``pandas.read_json("data.jsonl", lines=True)`` (values alike: a
DataFrame turns a column with a missing value into floats with NaN, which counts as null)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DatasetError, UsageError
from .dataset import Dataset, _json_value, select_rows


def is_records(value: Any) -> bool:
    """Whether ``value`` is meant as rows given as objects (not as a path to a file)."""
    return not isinstance(value, (str, Path)) and not hasattr(value, "__fspath__")


def load_records(
    value: Any, *, name: str | None = None, limit: int | None = None, offset: int = 0
) -> Dataset:
    """The rows of ``value`` (a sequence of mappings, or a DataFrame) as a dataset named
    ``name`` (shown and recorded as the config's dataset; default ``<DataFrame>`` or
    ``<list>``). The rows are copied as JSON values at once: changing the objects after
    this call changes nothing of the eval. Raises ``DatasetError`` for a row that is not a
    mapping or holds a value JSON has no form for."""
    frame = _is_dataframe(value)
    shown = name or ("<DataFrame>" if frame else "<list>")
    if frame:
        items = value.to_dict(orient="records")
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = value
    else:
        raise UsageError(f"a dataset is a path, a list of dicts or a pandas DataFrame, not "
                         f"{type(value).__name__}")  # fmt: skip
    rows: list[tuple[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{shown} row {i}"
        if not isinstance(item, Mapping):
            raise DatasetError(f"expected a dict, got {type(item).__name__}", path=shown,
                               where=where)  # fmt: skip
        rows.append((where, {str(k): _json_value(v, shown, where, str(k))
                             for k, v in item.items()}))  # fmt: skip

    def reader(path: Path, shown: str) -> Iterator[tuple[str, Any]]:
        yield from rows

    return select_rows(reader, Path(shown), shown, limit=limit, offset=offset)


def _is_dataframe(value: Any) -> bool:
    # By name, not isinstance: pandas is an optional extra, never imported for this.
    return any(c.__name__ == "DataFrame" and c.__module__.startswith("pandas")
               for c in type(value).__mro__)  # fmt: skip
