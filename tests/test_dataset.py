from __future__ import annotations

import csv
import datetime
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from osmo_store.errors import DatasetError, OsmoError, UsageError
from osmo_store.eval.dataset import Dataset, Row, load_dataset
from osmo_store.hashing import blake3_hex, canonical_json

ROWS: list[dict[str, Any]] = [
    {"user_prompt": "What is 2+2?", "ground_truth": "4", "topic": "math"},
    {"user_prompt": "Capital of France?", "ground_truth": "Paris", "topic": "geo"},
    {"user_prompt": "Color of the sky?", "ground_truth": "blue", "topic": "sci"},
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def keys_by_prompt(ds: Dataset) -> dict[str, str]:
    return {r.messages[-1]["content"]: r.key for r in ds.rows}


def error_of(path: Path, **kwargs: Any) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **kwargs)
    return info.value


# --- formats ---------------------------------------------------------------------------


def test_jsonl_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", ROWS)
    ds = load_dataset(path)
    assert ds.path == path.resolve()
    assert ds.total_rows == 3
    first = ds.rows[0]
    assert isinstance(first, Row)
    assert first.index == 0
    assert first.where == f"{path}:1"
    assert first.data == ROWS[0]
    assert first.messages == [{"role": "user", "content": "What is 2+2?"}]
    assert first.ground_truth == "4"
    assert first.metadata == {"topic": "math"}
    assert [r.where for r in ds.rows] == [f"{path}:{n}" for n in (1, 2, 3)]


def test_key_is_the_documented_content_hash(tmp_path: Path) -> None:
    # Cache reuse depends on this exact recipe; a silent change would orphan every cache.
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS[:1]))
    content = {
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "ground_truth": "4",
        "metadata": {"topic": "math"},
    }
    key = blake3_hex(canonical_json(content))[:32]
    assert ds.rows[0].key == key
    assert ds.fingerprint == blake3_hex(canonical_json([key]))


def test_jsonl_skips_blank_lines_and_numbers_physical_lines(tmp_path: Path) -> None:
    text = "\n" + json.dumps(ROWS[0]) + "\n   \n\n" + json.dumps(ROWS[1]) + "\n\n"
    ds = load_dataset(write_text(tmp_path / "d.jsonl", text))
    assert [r.where.rsplit(":", 1)[1] for r in ds.rows] == ["2", "5"]
    assert [r.index for r in ds.rows] == [0, 1]


def test_json_array_and_wrapped_object_give_the_same_keys(tmp_path: Path) -> None:
    plain = load_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS))
    array = load_dataset(write_json(tmp_path / "a.json", ROWS))
    wrapped = load_dataset(write_json(tmp_path / "w.json", {"version": 2, "data": ROWS}))
    assert [r.key for r in array.rows] == [r.key for r in plain.rows]
    assert [r.key for r in wrapped.rows] == [r.key for r in plain.rows]
    assert [r.where for r in wrapped.rows] == [f"{tmp_path / 'w.json'} item {i}" for i in range(3)]


def test_json_object_needs_exactly_one_list(tmp_path: Path) -> None:
    err = error_of(write_json(tmp_path / "d.json", {"a": ROWS, "b": ROWS}))
    assert "exactly one list-valued key" in str(err)
    err = error_of(write_json(tmp_path / "e.json", {"a": 1}))
    assert "exactly one list-valued key" in str(err)
    err = error_of(write_json(tmp_path / "f.json", "text"))
    assert "expected an array of rows" in str(err)


def test_csv_rows_values_stay_strings_and_empty_cells_are_none(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "d.csv",
        'user_prompt,system_prompt,ground_truth,n,note\nhi,,42,7,\nhello,Be brief.,,8,"a, b"\n',
    )
    ds = load_dataset(path)
    first, second = ds.rows
    assert first.data == {
        "user_prompt": "hi",
        "system_prompt": None,
        "ground_truth": "42",
        "n": "7",
        "note": None,
    }
    assert first.messages == [{"role": "user", "content": "hi"}]
    assert first.ground_truth == "42"
    assert first.metadata == {"n": "7", "note": None}
    assert second.messages[0] == {"role": "system", "content": "Be brief."}
    assert second.ground_truth is None
    assert second.metadata == {"n": "8", "note": "a, b"}


def test_csv_where_is_the_first_line_of_each_record(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "d.csv",
        'user_prompt,x\r\n"multi\r\nline\r\nprompt",1\r\n\r\nnext,2\r\n"a\nb",3\r\nlast,4\r\n',
    )
    ds = load_dataset(path)
    assert [r.where.rsplit(":", 1)[1] for r in ds.rows] == ["2", "6", "7", "9"]
    assert ds.rows[0].messages[0]["content"] == "multi\r\nline\r\nprompt"


def test_csv_ignores_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbfUser_Prompt,id\nhi,1\n")
    assert load_dataset(path).rows[0].messages == [{"role": "user", "content": "hi"}]


def test_csv_short_record_fills_none_long_record_is_an_error(tmp_path: Path) -> None:
    ds = load_dataset(write_text(tmp_path / "d.csv", "user_prompt,a,b\nhi,1\n"))
    assert ds.rows[0].metadata == {"a": "1", "b": None}
    err = error_of(write_text(tmp_path / "e.csv", "user_prompt,a\nhi,1\nho,1,2\n"))
    assert err.where == f"{tmp_path / 'e.csv'}:3"
    assert "3 fields but the header has 2" in str(err)


def test_csv_duplicated_header_is_an_error(tmp_path: Path) -> None:
    err = error_of(write_text(tmp_path / "d.csv", "user_prompt,a,a\nhi,1,2\n"))
    assert err.where == f"{tmp_path / 'd.csv'}:1"
    assert "duplicated column name 'a'" in str(err)


def test_csv_messages_column_is_json(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "hi"}]
    text = "messages,id\n" + '"' + json.dumps(messages).replace('"', '""') + '",1\n'
    ds = load_dataset(write_text(tmp_path / "d.csv", text))
    assert ds.rows[0].messages == messages
    assert ds.rows[0].data["messages"] == json.dumps(messages)


def test_parquet_rows_become_json_values(tmp_path: Path) -> None:
    when = datetime.datetime(2024, 5, 1, 12, 30)
    rows = [
        {"user_prompt": "a", "score": 1.5, "n": 3, "ok": True, "at": when, "tags": ["x", "y"]},
        {"user_prompt": "b", "score": math.nan, "n": 4, "ok": False, "at": when, "tags": []},
    ]
    path = write_parquet(tmp_path / "d.parquet", rows)
    ds = load_dataset(path)
    first, second = ds.rows
    assert first.metadata == {
        "score": 1.5,
        "n": 3,
        "ok": True,
        "at": "2024-05-01T12:30:00",
        "tags": ["x", "y"],
    }
    assert second.metadata["score"] is None  # pandas' missing-value NaN
    assert first.where == f"{path} row 0"
    assert second.where == f"{path} row 1"
    canonical_json(first.data)  # JSON-compatible all the way down


def test_parquet_messages_match_jsonl_keys(tmp_path: Path) -> None:
    # A struct column gives every message every field (tool_calls=None on user messages);
    # null fields are dropped so the same conversation keys the same in every format.
    rows = [
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function"}],
                },
                {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
            ],
            "ground_truth": "sunny",
        }
    ]
    pq_ds = load_dataset(write_parquet(tmp_path / "d.parquet", rows))
    jsonl_ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert pq_ds.rows[0].messages == rows[0]["messages"]
    assert pq_ds.rows[0].key == jsonl_ds.rows[0].key


def test_parquet_bad_row_names_the_row(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", [{"user_prompt": "a"}, {"user_prompt": None}])
    err = error_of(path)
    assert err.where == f"{path} row 1"
    assert str(err).startswith(f"{path} row 1: user_prompt must be a string, got null")


def test_parquet_file_that_is_not_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    err = error_of(write_text(tmp_path / "d.parquet", "not parquet"))
    assert "not a readable parquet file" in str(err)


def test_parquet_without_pyarrow_gives_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    err = error_of(write_text(tmp_path / "d.parquet", "whatever"))
    assert err.hint == "pip install 'osmo-store[parquet]'"
    assert "pyarrow" in str(err)


# --- columns ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["user_prompt", "User_Prompt", "USER_PROMPT", " user_prompt "])
def test_columns_match_case_insensitively(tmp_path: Path, prefix: str) -> None:
    row = {prefix: "hi", "System_PROMPT": "sys", "Ground_Truth": 3, "Extra_Col": "e"}
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [row]))
    r = ds.rows[0]
    assert r.messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert r.ground_truth == 3
    assert r.metadata == {"Extra_Col": "e"}  # original name kept


def test_column_spelling_does_not_change_keys(tmp_path: Path) -> None:
    a = load_dataset(write_jsonl(tmp_path / "a.jsonl", [{"user_prompt": "hi", "x": 1}]))
    b = load_dataset(write_jsonl(tmp_path / "b.jsonl", [{"USER_PROMPT": "hi", "x": 1}]))
    assert a.rows[0].key == b.rows[0].key


def test_two_spellings_of_one_column_are_ambiguous(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"user_prompt": "a", "User_Prompt": "b"}])
    err = error_of(path)
    assert err.where == f"{path}:1"
    assert "'user_prompt' and 'User_Prompt' both mean user_prompt" in str(err)


def test_missing_prompt_column_lists_columns_found(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "b"}])
    err = error_of(path)
    assert err.where == f"{path}:1"
    assert "no user_prompt or messages column" in str(err)
    assert "'prompt', 'answer'" in str(err)


def test_missing_prompt_column_in_csv_is_reported_at_the_header(tmp_path: Path) -> None:
    err = error_of(write_text(tmp_path / "d.csv", "prompt,answer\na,b\n"))
    assert err.where == f"{tmp_path / 'd.csv'}:1"
    assert "'prompt', 'answer'" in str(err)


def test_user_prompt_and_messages_together_are_ambiguous(tmp_path: Path) -> None:
    row = {"user_prompt": "a", "Messages": [{"role": "user", "content": "b"}]}
    err = error_of(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert "both 'user_prompt' and 'Messages' columns are present" in str(err)


# --- system prompt and messages --------------------------------------------------------


@pytest.mark.parametrize("system", [None, ""])
def test_empty_or_null_system_prompt_is_left_out(tmp_path: Path, system: str | None) -> None:
    row = {"user_prompt": "hi", "system_prompt": system}
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert ds.rows[0].messages == [{"role": "user", "content": "hi"}]


def test_system_prompt_must_be_a_string(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"user_prompt": "x", "system_prompt": 1}])
    err = error_of(path)
    assert err.where == f"{path}:2"
    assert "system_prompt must be a string, got a number" in str(err)


def test_messages_column_is_used_as_is(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "bob"},
    ]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages, "id": 1}]))
    assert ds.rows[0].messages == messages
    assert ds.rows[0].metadata == {"id": 1}


def test_system_prompt_is_prepended_to_messages(tmp_path: Path) -> None:
    row = {"messages": [{"role": "user", "content": "hi"}], "system_prompt": "s"}
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert ds.rows[0].messages == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "hi"},
    ]


def test_system_prompt_and_system_message_conflict(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "a"}, {"role": "user", "content": "hi"}]
    row = {"messages": messages, "system_prompt": "b"}
    err = error_of(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert "both a system_prompt and a system message" in str(err)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([], "must be a non-empty list"),
        ("not json", "not valid JSON"),
        ({"role": "user"}, "must be a non-empty list"),
        (["hi"], "messages[0] must be an object, got a string"),
        ([{"role": "bot", "content": "x"}], "messages[0].role must be one of"),
        ([{"role": ["user"], "content": "x"}], "messages[0].role must be one of"),
        ([{"content": "x"}], "messages[0].role must be one of"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], "messages[1].content is missing"),
        ([{"role": "user", "content": None}], "messages[0].content is missing"),
        ([{"role": "assistant", "content": None}], "messages[0].content is missing"),
        ([{"role": "user", "content": 3}], "messages[0].content must be a string or a list"),
    ],
)
def test_bad_messages_name_file_and_line(tmp_path: Path, messages: Any, reason: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "ok"}]}])
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"messages": messages}) + "\n")
    err = error_of(path)
    assert err.where == f"{path}:2"
    assert reason in str(err)
    assert str(err).startswith(f"{path}:2: ")


def test_assistant_tool_call_may_have_null_content(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
    ]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]))
    assert ds.rows[0].messages == messages


# --- bad rows name file and location, in every format ----------------------------------


def test_non_string_user_prompt_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], {"user_prompt": 5}])
    err = error_of(path)
    assert isinstance(err, OsmoError)
    assert err.where == f"{path}:3"
    assert str(err) == f"{path}:3: user_prompt must be a string, got a number"


def test_non_string_user_prompt_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "d.json", [ROWS[0], {"user_prompt": ["a"]}])
    err = error_of(path)
    assert str(err) == f"{path} item 1: user_prompt must be a string, got an array"


def test_empty_user_prompt_cell_csv(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "id,user_prompt\n1,hi\n2,\n")
    err = error_of(path)
    assert str(err) == f"{path}:3: user_prompt must be a string, got null"


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.jsonl", json.dumps(ROWS[0]) + '\n\n{"user_prompt": "x",\n')
    err = error_of(path)
    assert err.where == f"{path}:3"
    assert "invalid JSON" in str(err)


def test_bad_json_document_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.json", '[\n  {"user_prompt": "x"},\n  {oops}\n]\n')
    err = error_of(path)
    assert err.where == f"{path}:3"


def test_nan_is_not_json(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "d.jsonl", json.dumps(ROWS[0]) + '\n{"user_prompt": "x", "s": NaN}\n'
    )
    err = error_of(path)
    assert err.where == f"{path}:2"
    assert "NaN is not valid JSON" in str(err)
    path = write_text(tmp_path / "d.json", '[{"user_prompt": "x", "s": Infinity}]')
    assert str(error_of(path)) == f"{path}: Infinity is not valid JSON"


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"user_prompt": "a"}\n{"user_prompt": "\xff"}\n')
    assert error_of(path).where == f"{path}:2"
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"user_prompt\na\nb\n\xff\n")
    assert error_of(csv_path).where == f"{csv_path}:4"
    json_path = tmp_path / "d.json"
    json_path.write_bytes(b'[\n{"user_prompt": "a"},\n{"user_prompt": "\xff"}\n]')
    assert error_of(json_path).where == f"{json_path}:3"


def test_malformed_csv_names_the_line(tmp_path: Path) -> None:
    huge = "x" * (csv.field_size_limit() + 1)
    path = write_text(tmp_path / "d.csv", f"user_prompt\nhi\n{huge}\n")
    err = error_of(path)
    assert err.where == f"{path}:3"
    assert "malformed CSV" in str(err)


def test_csv_quote_never_closed_is_an_error_at_its_record(tmp_path: Path) -> None:
    """Not one prompt holding the rest of the file (what a lenient reader makes of it)."""
    path = write_text(tmp_path / "d.csv",
                      'user_prompt,ground_truth\nq1,2\n"q2,4\nq3,6\nq4,8\n')  # fmt: skip
    err = error_of(path)
    assert err.where == f"{path}:3"
    assert "malformed CSV: a quoted field is never closed" in str(err)


def test_csv_stray_quote_is_an_error(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", 'user_prompt,ground_truth\nq1,2\n"q2"x,4\n')
    err = error_of(path)
    assert err.where == f"{path}:3" and "malformed CSV" in str(err)


@pytest.mark.parametrize("row", [[1, 2], "text", 3, None])
def test_rows_must_be_objects(tmp_path: Path, row: Any) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], row])
    err = error_of(path)
    assert err.where == f"{path}:2"
    assert "expected a JSON object" in str(err)
    path = write_json(tmp_path / "d.json", [ROWS[0], row])
    assert error_of(path).where == f"{path} item 1"


# --- keys and fingerprint --------------------------------------------------------------


def test_keys_survive_reordering(tmp_path: Path) -> None:
    a = load_dataset(write_jsonl(tmp_path / "a.jsonl", ROWS))
    b = load_dataset(write_jsonl(tmp_path / "b.jsonl", ROWS[::-1]))
    assert keys_by_prompt(a) == keys_by_prompt(b)
    assert len(set(keys_by_prompt(a).values())) == 3
    assert a.fingerprint != b.fingerprint  # file order is part of the dataset's identity


def test_fingerprint_ignores_path_spelling_limit_and_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    absolute = load_dataset(path)
    monkeypatch.chdir(tmp_path)
    relative = load_dataset("d.jsonl")
    dotted = load_dataset(Path("..") / tmp_path.name / "d.jsonl")
    limited = load_dataset(path, limit=1, offset=1)
    assert relative.path == absolute.path == dotted.path == path.resolve()
    assert relative.path.is_absolute()
    assert relative.fingerprint == absolute.fingerprint == dotted.fingerprint
    assert limited.fingerprint == absolute.fingerprint
    assert [r.key for r in relative.rows] == [r.key for r in absolute.rows]
    assert relative.rows[0].where == "d.jsonl:1"  # shown as the user typed it


def test_same_content_in_another_file_has_the_same_fingerprint(tmp_path: Path) -> None:
    a = load_dataset(write_jsonl(tmp_path / "a.jsonl", ROWS))
    b = load_dataset(write_jsonl(tmp_path / "b.jsonl", ROWS))
    assert a.fingerprint == b.fingerprint


@pytest.mark.parametrize(
    "edit",
    [
        {"user_prompt": "What is 3+3?"},
        {"ground_truth": "5"},
        {"topic": "arithmetic"},
        {"system_prompt": "Be brief."},
        {"new_column": None},
    ],
)
def test_editing_a_row_changes_only_its_key(tmp_path: Path, edit: dict[str, Any]) -> None:
    before = load_dataset(write_jsonl(tmp_path / "a.jsonl", ROWS))
    edited = [dict(r) for r in ROWS]
    edited[1].update(edit)
    after = load_dataset(write_jsonl(tmp_path / "b.jsonl", edited))
    changed = [i for i in range(3) if before.rows[i].key != after.rows[i].key]
    assert changed == [1]
    assert before.fingerprint != after.fingerprint


def test_duplicate_rows_get_distinct_numbered_keys(tmp_path: Path) -> None:
    rows = [ROWS[0], ROWS[1], ROWS[0], ROWS[0]]
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    base = ds.rows[0].key
    assert [r.key for r in ds.rows] == [base, ds.rows[1].key, f"{base}-1", f"{base}-2"]
    single = load_dataset(write_jsonl(tmp_path / "s.jsonl", [ROWS[0]]))
    assert single.rows[0].key == base


def test_duplicate_numbering_does_not_depend_on_other_rows(tmp_path: Path) -> None:
    a = load_dataset(write_jsonl(tmp_path / "a.jsonl", [ROWS[0], ROWS[1], ROWS[0]]))
    b = load_dataset(write_jsonl(tmp_path / "b.jsonl", [ROWS[2], ROWS[0], ROWS[0], ROWS[1]]))
    assert sorted(r.key for r in a.rows if r.data == ROWS[0]) == sorted(
        r.key for r in b.rows if r.data == ROWS[0]
    )
    assert a.rows[1].key == b.rows[3].key


# --- limit / offset --------------------------------------------------------------------


def test_limit_and_offset(tmp_path: Path) -> None:
    rows = [{"user_prompt": f"q{i}"} for i in range(10)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    full = load_dataset(path)
    window = load_dataset(path, offset=3, limit=4)
    assert window.total_rows == full.total_rows == 10
    assert [r.index for r in window.rows] == [3, 4, 5, 6]
    assert window.rows == full.rows[3:7]
    assert [r.index for r in load_dataset(path, limit=2).rows] == [0, 1]
    assert [r.index for r in load_dataset(path, offset=8).rows] == [8, 9]
    assert [r.index for r in load_dataset(path, offset=8, limit=5).rows] == [8, 9]
    assert load_dataset(path, limit=0).rows == []


def test_rows_outside_the_window_are_still_validated(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], {"user_prompt": 1}])
    assert error_of(path, limit=1).where == f"{path}:3"


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"offset": -1}])
def test_negative_limit_or_offset_is_an_error(tmp_path: Path, kwargs: dict[str, int]) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(UsageError, match="must be >= 0"):
        load_dataset(path, **kwargs)


def test_offset_past_the_end_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert "offset 3 is past the last row (3 rows)" in str(error_of(path, offset=3))


# --- files -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nope.jsonl")
    assert str(err) == f"{tmp_path / 'nope.jsonl'}: no such file"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").mkdir()
    assert "is a directory" in str(error_of(tmp_path / "d.jsonl"))


@pytest.mark.parametrize("name", ["d.txt", "d.jsonl.gz", "data"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = write_text(tmp_path / name, json.dumps(ROWS[0]) + "\n")
    err = error_of(path)
    assert "unsupported file type" in str(err)
    assert err.hint is not None and ".jsonl" in err.hint


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    assert load_dataset(write_jsonl(tmp_path / "D.JSONL", ROWS)).total_rows == 3


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_format_comes_from_the_name_as_typed(tmp_path: Path) -> None:
    blob = write_jsonl(tmp_path / "blob", ROWS)
    link = tmp_path / "data.jsonl"
    link.symlink_to(blob)
    ds = load_dataset(link)
    assert ds.total_rows == 3
    assert ds.path == blob.resolve()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("d.jsonl", ""),
        ("d.jsonl", "\n  \n\n"),
        ("d.json", "[]"),
        ("d.json", '{"data": []}'),
        ("d.csv", ""),
        ("d.csv", "user_prompt,x\n"),
        ("d.csv", "user_prompt,x\n\n\n"),
    ],
)
def test_empty_dataset(tmp_path: Path, name: str, text: str) -> None:
    err = error_of(write_text(tmp_path / name, text))
    assert str(err) == f"{tmp_path / name}: dataset has no rows"


def test_empty_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"user_prompt": pa.array([], pa.string())}), path)
    assert "dataset has no rows" in str(error_of(path))


def test_parquet_duplicated_column_is_an_error(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    column = pa.array(["a"])
    pq.write_table(
        pa.Table.from_arrays([column, column], names=["user_prompt", "user_prompt"]), path
    )
    assert str(error_of(path)) == f"{path}: duplicated column name 'user_prompt'"
