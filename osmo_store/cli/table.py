"""Tables of text columns, and fitting them to a terminal as git and restic do: on a narrow
terminal the least useful columns go first, then the long cells are shortened; piped, a
table is printed whole (scripts and `grep` see every column)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .common import out

GAP = "  "


def terminal_columns() -> int | None:
    """The width of the terminal stdout is, or None when it is not one (piped, a file)."""
    if not sys.stdout.isatty():
        return None
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            return None
    return columns or None


def print_table(
    rows: Sequence[Sequence[str]],
    *,
    width: int | None = None,
    drop: Sequence[str] = (),
    shrink: dict[str, int] | None = None,
    keep_end: Sequence[str] = (),
) -> None:
    """``rows`` (the first is the header) in aligned columns. Given a ``width``, the table
    is made to fit it: columns named in ``drop`` go, in that order, while the table would
    not fit even with the ``shrink`` columns at their least width ({name: least}); then
    the widest of those is cut a character at a time (a cut cell ends with an ellipsis, or
    starts with one for the columns in ``keep_end``, whose end says most)."""
    header = list(rows[0])
    widths = {name: max(len(r[i]) for r in rows) for i, name in enumerate(header)}
    shown = list(header)
    if width is not None:
        shown, widths = _fit(shown, widths, width, drop, shrink or {})
    index = [header.index(name) for name in shown]
    mark = "…" if (sys.stdout.encoding or "").lower().startswith("utf") else "~"
    for r in rows:
        cells = [_cut(r[i], widths[name], mark, name in keep_end).ljust(widths[name])
                 for i, name in zip(index, shown, strict=True)]  # fmt: skip
        line = GAP.join(cells)
        out(line.rstrip()[: width or None])


def _fit(
    shown: list[str], widths: dict[str, int], width: int, drop: Sequence[str], least: dict[str, int]
) -> tuple[list[str], dict[str, int]]:
    def total(names: list[str], size: dict[str, int]) -> int:
        return sum(size[n] for n in names) + len(GAP) * (len(names) - 1)

    floors = {n: min(w, max(least.get(n, w), len(n))) for n, w in widths.items()}
    for name in drop:
        if total(shown, floors) <= width:
            break
        if name in shown:
            shown.remove(name)
    widths = dict(widths)
    while total(shown, widths) > width:
        cuttable = [n for n in shown if n in least and widths[n] > floors[n]]
        if not cuttable:
            break  # a terminal too narrow for even this: lines are cut at its edge
        widths[max(cuttable, key=widths.__getitem__)] -= 1
    return shown, widths


def _cut(text: str, width: int, mark: str, keep_end: bool) -> str:
    if len(text) <= width:
        return text
    return mark + text[len(text) - width + 1 :] if keep_end else text[: width - 1] + mark
