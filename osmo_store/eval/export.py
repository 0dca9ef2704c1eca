"""A config's samples as a table: one row per sample, scores flattened to one column per
metric, written as JSON lines, CSV or Parquet. The format comes from the file's suffix or
is named; one that cannot be written (an unknown suffix, Parquet without pyarrow) is
refused by ``check_format`` before anything runs."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .results import StoredConfig
from .summary import metric_values  # the summary's flattening, so the names agree

FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
#: columns every export has, in this order; metric, error and usage columns follow
BASE_COLUMNS = ("config_id", "index", "row", "run", "status", "prompt", "ground_truth",
                "solution")  # fmt: skip
#: columns holding structures: objects in JSON lines, JSON text in CSV and Parquet
NESTED_COLUMNS = ("data", "messages")


def check_format(path: str | Path, fmt: str | None = None) -> str:
    """The format to write ``path`` in: ``fmt`` if given, else its suffix's."""
    if fmt is None:
        fmt = FORMATS.get(Path(path).suffix.lower())
        if fmt is None:
            raise UsageError(f"{path}: cannot tell the format from the suffix "
                             f"{Path(path).suffix or '(none)'!r}",
                             hint="use .jsonl, .csv or .parquet, or --format")  # fmt: skip
    if fmt not in FORMATS.values():
        raise UsageError(f"unknown format {fmt!r}: use jsonl, csv or parquet")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401 - only to know it is there
        except ImportError:
            raise UsageError("writing parquet needs pyarrow",
                             hint="pip install 'osmo-store[parquet]'") from None  # fmt: skip
    return fmt


def sample_records(stored: StoredConfig) -> list[dict[str, Any]]:
    """One flat record per sample, in dataset order."""
    return [flat_record(stored.config_id, stored.view(ref)) for ref in stored.refs()]


def flat_record(config_id: str, v: dict[str, Any]) -> dict[str, Any]:
    """A sample view (``StoredConfig.view``) as one flat record: ``score/<metric>``,
    ``scoring_error/<fn>``, ``error_type|status|message`` and ``usage/<name>`` columns."""
    messages = v["messages"]
    prompt = next((m.get("content") for m in reversed(messages or []) if m.get("role") == "user"),
                  None)  # fmt: skip
    data = v["data"] or {}
    record: dict[str, Any] = {
        "config_id": config_id,
        "index": v["index"],
        "row": v["row"],
        "run": v["run"],
        "status": v["status"],
        "prompt": prompt if isinstance(prompt, str) else _field(data, "user_prompt"),
        "ground_truth": _field(data, "ground_truth"),
        "solution": v["solution"],
    }
    for metric, value in sorted(metric_values(v["scores"]).items()):
        record[f"score/{metric}"] = value
    for fn, message in sorted(v["scoring_errors"].items()):
        record[f"scoring_error/{fn}"] = message
    error = v["error"] or {}
    if error:
        record.update(error_type=error.get("type"), error_status=error.get("status"),
                      error_message=error.get("message"))  # fmt: skip
    for name, count in sorted((v["usage"] or {}).items()):
        record[f"usage/{name}"] = count
    record["latency_s"] = v["latency_s"]
    record["data"] = data
    record["messages"] = messages
    return record


def write_records(records: list[dict[str, Any]], path: str | Path, fmt: str) -> None:
    """Write ``records`` (see ``flat_record``) to ``path`` as ``fmt``; a column that only
    some records have is empty (null) in the others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = table_columns(records)
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in records:
                writer.writerow([_cell(r.get(c), c) for c in columns])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [_parquet_row(r, columns) for r in records]
        pq.write_table(pa.Table.from_pylist(rows), path)


# In Parquet a column has one type: ground truths may be numbers in one row and text in the
# next, so they are written as JSON text like the structures.
_TEXT_COLUMNS = frozenset((*NESTED_COLUMNS, "ground_truth"))


def table_columns(records: Iterable[dict[str, Any]]) -> list[str]:
    """The columns of a table of ``records`` (see ``flat_record``), in export order."""
    extra: set[str] = set()
    for r in records:
        extra.update(r)
    groups = ("score/", "scoring_error/", "error_", "usage/")

    def order(column: str) -> tuple[int, str]:
        return next(i for i, g in enumerate(groups) if column.startswith(g)), column

    middle = sorted((c for c in extra if c.startswith(groups)), key=order)
    return [*BASE_COLUMNS, *middle, "latency_s", *NESTED_COLUMNS]


def _parquet_row(record: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return {c: _json_text(record.get(c)) if c in _TEXT_COLUMNS else record.get(c)
            for c in columns}  # fmt: skip


def _cell(value: Any, column: str) -> Any:
    if value is None:
        return ""
    if column in NESTED_COLUMNS or isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _field(data: dict[str, Any], name: str) -> Any:
    """A dataset column by name in any case, as the dataset loader matches them."""
    return next((v for k, v in data.items() if k.lower() == name), None)
