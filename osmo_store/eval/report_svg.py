"""The plots of the HTML report, drawn as inline SVG text in Python: no plotting library,
no script and nothing fetched to show them. Every label is escaped (metric and config names
are the user's). Points that fall on the same spot are drawn once, sized by their count,
so a plot of 10,000 rows of 0/1 scores is a handful of elements."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 380, 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 12, 26, 40
#: series colours (colour-blind safe, Okabe-Ito), in config order
COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
#: what a row's change means in the per-row scatter: none is a config's colour, so a point
#: is never read as belonging to one config (and a legend says which is which)
WORSE, UNCHANGED, BETTER = "#d62728", "#999999", "#2ca02c"
#: a metric with at most this many distinct values gets one bar per value, not ranges
_DISCRETE = 12
_BINS = 20
_LEGEND, _LEGEND_GAP = 20, 12  # a legend row's height under a plot; space between entries


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def histogram(
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    colors: Sequence[str] | None = None,
) -> str:
    """Grouped bars: for each series, the share of its values in each bin (shares, not
    counts, so configs with different numbers of runs compare). ``colors``: one per series
    (default: the configs' colours in order)."""
    values = sorted({v for _, vs in series for v in vs})
    if not values:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no values</text>')
    if len(values) <= _DISCRETE:
        edges = None
        labels = [_num(v) for v in values]
    else:
        lo, hi = values[0], values[-1]
        edges = [lo + (hi - lo) * i / _BINS for i in range(_BINS + 1)]
        labels = [_num(e) for e in edges]
    nbins = len(values) if edges is None else _BINS
    shares = []
    for _, vs in series:
        counts = Counter(values.index(v) if edges is None else _bin(v, edges) for v in vs)
        shares.append([counts[b] / len(vs) if vs else 0.0 for b in range(nbins)])
    top = max((s for row in shares for s in row), default=0.0) or 1.0
    pw, ph = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = pw / nbins
    bar = slot * 0.8 / len(series)
    parts = [_axes(), _ytick(_TOP + ph, "0"), _ytick(_TOP, f"{100 * top:.0f}%")]
    for si, row in enumerate(shares):
        name = series[si][0]
        fill = colors[si] if colors else color(si)
        for b, share in enumerate(row):
            if not share:
                continue
            h = ph * share / top
            x = _LEFT + b * slot + slot * 0.1 + si * bar
            what = labels[b] if edges is None else f"{labels[b]} to {labels[b + 1]}"
            parts.append(
                f'<rect x="{x:.1f}" y="{_TOP + ph - h:.1f}" width="{max(bar, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{fill}"><title>{escape(name)}: {escape(what)}: '
                f"{100 * share:.1f}% of runs</title></rect>"
            )
    ticks = range(nbins) if edges is None else range(0, _BINS + 1, 5)
    for b in ticks:
        x = _LEFT + (b + 0.5) * slot if edges is None else _LEFT + b * slot
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 14}" text-anchor="middle">'
                     f"{escape(labels[b])}</text>")  # fmt: skip
    parts.append(_xlabel(xlabel))
    return _frame(title, "".join(parts))


def scatter(points: Sequence[tuple[float, float]], *, title: str, xlabel: str, ylabel: str) -> str:
    """One point per row (A's mean score, B's), on the same scale on both axes, with the
    line y = x: points below it are rows where B scored lower, drawn red (above: green;
    on it: grey), as a legend under the axis says."""
    if not points:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no rows</text>')
    counts = Counter((round(x, 6), round(y, 6)) for x, y in points)
    lo = min(min(x, y) for x, y in counts)
    hi = max(max(x, y) for x, y in counts)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    pw, ph = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def sx(v: float) -> float:
        return _LEFT + pw * (v - lo) / (hi - lo)

    def sy(v: float) -> float:
        return _TOP + ph - ph * (v - lo) / (hi - lo)

    most = max(counts.values())
    parts = [_axes(),
             f'<line x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" y2="{sy(hi):.1f}" '
             'class="ref"/>']  # fmt: skip
    for (x, y), n in sorted(counts.items()):
        r = 2.5 + 9 * math.sqrt(n / most)
        fill = WORSE if y < x else BETTER if y > x else UNCHANGED
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r:.1f}" fill="{fill}" '
            f'fill-opacity="0.6"><title>A {_num(x)}, B {_num(y)}: {n} row'
            f"{'s' if n != 1 else ''}</title></circle>"
        )
    for v in (lo + pad, hi - pad):
        parts.append(_ytick(sy(v), _num(v)))
        parts.append(f'<text x="{sx(v):.1f}" y="{HEIGHT - _BOTTOM + 14}" '
                     f'text-anchor="middle">{_num(v)}</text>')  # fmt: skip
    parts.append(_xlabel(xlabel))
    mid = f"{_TOP + ph / 2:.1f}"
    parts.append(f'<text x="12" y="{mid}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {mid})">{escape(ylabel)}</text>')  # fmt: skip
    parts.append(_legend(((WORSE, "B worse"), (UNCHANGED, "unchanged"), (BETTER, "B better")),
                         y=HEIGHT + 10))  # fmt: skip
    return _frame(title, "".join(parts), height=HEIGHT + _LEGEND)


def interval(
    difference: float, lo: float, hi: float, *, title: str, label: str, fill: str = COLORS[0]
) -> str:
    """The mean difference as a point (``fill``: the colour of the config it describes) on
    its confidence interval, against a dashed line at zero (no difference)."""
    left, right = min(lo, 0.0, difference), max(hi, 0.0, difference)
    span = (right - left) or 1.0
    left, right = left - span * 0.15, right + span * 0.15
    height = 110
    pw = WIDTH - 2 * _LEFT

    def sx(v: float) -> float:
        return _LEFT + pw * (v - left) / (right - left)

    y = 52
    parts = [
        f'<line x1="{sx(0):.1f}" y1="30" x2="{sx(0):.1f}" y2="76" class="ref"/>',
        f'<text x="{sx(0):.1f}" y="90" text-anchor="middle">0</text>',
        f'<line x1="{sx(lo):.1f}" y1="{y}" x2="{sx(hi):.1f}" y2="{y}" class="ci"/>',
        f'<line x1="{sx(lo):.1f}" y1="{y - 8}" x2="{sx(lo):.1f}" y2="{y + 8}" class="ci"/>',
        f'<line x1="{sx(hi):.1f}" y1="{y - 8}" x2="{sx(hi):.1f}" y2="{y + 8}" class="ci"/>',
        f'<circle cx="{sx(difference):.1f}" cy="{y}" r="6" fill="{fill}">'
        f"<title>{escape(label)}</title></circle>",
        f'<text x="{sx(lo):.1f}" y="{y + 24}" text-anchor="middle">{lo:+.4f}</text>',
        f'<text x="{sx(hi):.1f}" y="{y + 24}" text-anchor="middle">{hi:+.4f}</text>',
        f'<text x="{sx(difference):.1f}" y="{y - 12}" text-anchor="middle">'
        f"{difference:+.4f}</text>",
    ]
    return _frame(title, "".join(parts), height=height)


def _frame(title: str, body: str, *, height: int = HEIGHT) -> str:
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="{WIDTH / 2}" y="15" text-anchor="middle" class="title">{escape(title)}</text>'
        f"{body}</svg>"
    )


def _legend(entries: Sequence[tuple[str, str]], *, y: float) -> str:
    """A row of coloured dots with their meaning, centred (text width estimated: 10px
    type is about 5.5px a character)."""
    widths = [14 + 5.5 * len(text) for _, text in entries]
    x = (WIDTH - sum(widths) - _LEGEND_GAP * (len(entries) - 1)) / 2
    parts = []
    for (fill, text), w in zip(entries, widths, strict=True):
        parts.append(f'<circle cx="{x + 4:.1f}" cy="{y - 3}" r="4" fill="{fill}"/>'
                     f'<text x="{x + 11:.1f}" y="{y}">{escape(text)}</text>')  # fmt: skip
        x += w + _LEGEND_GAP
    return "".join(parts)


def _axes() -> str:
    x0, y0 = _LEFT, HEIGHT - _BOTTOM
    return (
        f'<line x1="{x0}" y1="{y0}" x2="{WIDTH - _RIGHT}" y2="{y0}" class="axis"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{_TOP}" class="axis"/>'
    )


def _ytick(y: float, text: str) -> str:
    return f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{escape(text)}</text>'


def _xlabel(text: str) -> str:
    return f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(text)}</text>'


def _bin(v: float, edges: list[float]) -> int:
    lo, hi = edges[0], edges[-1]
    return min(int((v - lo) / (hi - lo) * _BINS), _BINS - 1)


def _num(v: float) -> str:
    return f"{v:.3g}"
