"""One self-contained HTML page for one or more stored configs (``osmo eval report``): each
config's parameters and summary, score distributions, with two configs or more each one
compared with the first (mean difference with a paired CI, per-row plots), failure groups,
and a table of samples whose conversations open in the page.

The page needs no network: style and script are inline, plots are inline SVG, and its
Content-Security-Policy forbids fetching anything and lets only the page's own script run
(by hash), so even a string that escaped escaping could not run. Every user string in the
HTML is escaped here; the samples travel as one JSON data element that the script renders
as text on demand, which keeps the page small (10,000 samples are not 10,000 rendered
conversations)."""

from __future__ import annotations

import base64
import hashlib
import time
from html import escape
from typing import Any

from .. import __version__
from . import report_svg as svg
from .failures import describe_cause
from .report_assets import CSS, JS
from .report_data import Comparison, ConfigReport, ReportData, sample_table, script_json
from .summary import describe


def render_report(data: ReportData, *, generated: float | None = None) -> str:
    """The page's HTML text."""
    names = ", ".join(c.name for c in data.configs)
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(generated or time.time()))
    table = sample_table(data)
    for i, c in enumerate(table["configs"]):
        c["color"] = svg.color(i)
    script_hash = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src 'sha256-{script_hash}'")  # fmt: skip
    sections = [_configs(data), _scores(data)]
    if data.comparisons:
        sections.append(_comparisons(data))
    sections += [_failures(data), _samples(data)]
    nav = "".join(f'<a href="#{s}">{t}</a>' for s, t in _NAV if s != "comparison"
                  or data.comparisons)  # fmt: skip
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>osmo eval report: {escape(names)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Eval report: {escape(names)}</h1>"
        f'<p class="muted">{len(data.configs)} config{"s" if len(data.configs) > 1 else ""}, '
        f"made by osmo {escape(__version__)} on {escape(when)}</p><nav>{nav}</nav></header>"
        + "".join(sections)
        + f'<script type="application/json" id="osmo-data">{script_json(table)}</script>'
        f"<script>{JS}</script></body></html>\n"
    )


_NAV = (("configs", "Configs"), ("scores", "Scores"), ("comparison", "Comparison"),
        ("failures", "Failures"), ("samples", "Samples"))  # fmt: skip


def _swatch(i: int) -> str:
    return f'<span class="swatch" style="background:{svg.color(i)}"></span>'


def _configs(data: ReportData) -> str:
    header = "".join(f"<th>{_swatch(i)}{escape(c.name)}</th>" for i, c in enumerate(data.configs))
    fields = [_config_fields(c) for c in data.configs]
    body = ""
    for name in fields[0]:
        cells = "".join(f"<td>{escape(str(f.get(name, '-')))}</td>" for f in fields)
        body += f"<tr><th>{escape(name)}</th>{cells}</tr>"
    return (f'<section id="configs"><h2>Configs</h2><table class="params"><tr><th></th>{header}'
            f"</tr>{body}</table></section>")  # fmt: skip


def _config_fields(c: ConfigReport) -> dict[str, str]:
    m, s = c.stored.meta, c.stored.summary
    given = m.get("config") or {}
    counts = m.get("counts") or {}
    params = dict(given.get("params") or {})
    if given.get("max_turns"):
        params["max_turns"] = given["max_turns"]
    updated = (m.get("session") or {}).get("updated")
    ok = sum(1 for v in c.views if v["status"] == "ok")
    errors = sum(1 for v in c.views if v["scoring_errors"])
    fields = {
        "config": c.stored.config_id,
        "label": m.get("label") or "-",
        "status": c.status,
        "model": given.get("model") or "-",
        "endpoint": given.get("model_id") or given.get("base_url") or "-",
        "agent": given.get("agent") or "-",
        "eval functions": ", ".join(given.get("eval_fns") or []) or "-",
        "dataset": f"{given.get('dataset', '-')} ({given.get('rows', '?')} rows x "
        f"n={given.get('n', '?')})",
        "params": ", ".join(f"{k} {v}" for k, v in sorted(params.items())) or "-",
        "runs": f"{counts.get('done', len(c.views))}/{counts.get('total', len(c.views))} "
        f"recorded: {ok} ok, {len(c.views) - ok} failed, {errors} with scoring errors",
        "primary score": _primary(s),
        "pass@k": "  ".join(f"{k} {v:.4f}" for k, v in (s.get("pass_at_k") or {}).items()) or "-",
        "tokens": ", ".join(f"{k} {v:,}" for k, v in sorted((s.get("tokens") or {}).items()))
        or "-",
        "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(updated)) if updated else "-",
    }
    return fields


def _primary(summary: dict[str, Any]) -> str:
    score = summary.get("primary_score")
    return "-" if score is None else f"{summary['primary_metric']} {score:.4f}"


def _scores(data: ReportData) -> str:
    if not data.metrics:
        return ('<section id="scores"><h2>Scores</h2><p class="muted">no scored runs: every '
                "run failed or its scoring raised (see Failures)</p></section>")  # fmt: skip
    head = "".join(f"<th colspan=\"3\">{_swatch(i)}{escape(c.name)}</th>"
                   for i, c in enumerate(data.configs))  # fmt: skip
    sub = "".join('<th class="num">mean</th><th class="num">std</th><th class="num">n</th>'
                  for _ in data.configs)  # fmt: skip
    body = ""
    for metric in data.metrics:
        cells = ""
        for c in data.configs:
            values = c.values.get(metric)
            if not values:
                cells += '<td class="num">-</td><td class="num">-</td><td class="num">0</td>'
                continue
            d = describe(values)
            cells += (f'<td class="num">{d["mean"]:.4f}</td><td class="num">{d["std"]:.4f}</td>'
                      f'<td class="num">{d["count"]}</td>')  # fmt: skip
        body += f"<tr><th>{escape(metric)}</th>{cells}</tr>"
    plots = "".join(
        svg.histogram([(c.name, c.values.get(m, [])) for c in data.configs],
                      title=f"distribution of {m}", xlabel=f"{m} (share of each config's runs)")
        for m in data.metrics
    )  # fmt: skip
    legend = _legend(data)
    return (f'<section id="scores"><h2>Scores</h2><table><tr><th rowspan="2">metric</th>{head}'
            f'</tr><tr>{sub}</tr>{body}</table>{legend}<div class="plots">{plots}</div>'
            "</section>")  # fmt: skip


def _legend(data: ReportData) -> str:
    return "<p>" + " ".join(f"{_swatch(i)}{escape(c.name)}"
                            for i, c in enumerate(data.configs)) + "</p>"  # fmt: skip


def _comparisons(data: ReportData) -> str:
    base = data.configs[0].name
    parts = [f'<section id="comparison"><h2>Comparison with {escape(base)}</h2>']
    for comp in data.comparisons:
        parts.append(_comparison(data, comp))
    parts.append("</section>")
    return "".join(parts)


def _comparison(data: ReportData, comp: Comparison) -> str:
    a, b = data.configs[0], data.configs[comp.other]
    title = f"<h3>{_swatch(comp.other)}{escape(b.name)} vs {escape(a.name)}</h3>"
    r = comp.result
    if r is None:
        return f'{title}<p class="bad">not compared: {escape(comp.error or "")}</p>'
    lo, hi = r["ci"]
    diff = r["difference"]
    tone = "bad" if hi < 0 else "good" if lo > 0 else ""
    t = r["test"]
    if t["name"] == "McNemar exact":
        test = (f"McNemar exact test: {t['a_only']} runs pass in A only, {t['b_only']} in B "
                f"only; p = {t['p_value']:.4g}")  # fmt: skip
    else:
        test = f"sign-flip permutation test over rows: p = {t['p_value']:.4g}"
    worse = sum(1 for c in r["changes"] if c["delta"] < 0)
    metric = escape(r["metric"])
    lines = [
        f'<p class="stat {tone}">B - A = {diff:+.4f} &nbsp; {100 * r["confidence"]:g}% CI '
        f"[{lo:+.4f}, {hi:+.4f}] &nbsp; ({metric}: A {r['a']['mean']:.4f}, B "
        f"{r['b']['mean']:.4f})</p>",
        f"<p>paired bootstrap over rows, {r['resamples']} resamples; {escape(test)}</p>",
        f"<p>{r['pairs']} runs of {r['rows']} rows compared; not scored (failed or a scoring "
        f"error): {r['unscored']['a']} in A, {r['unscored']['b']} in B; "
        f"{len(r['changes'])} rows changed: {worse} worse, {len(r['changes']) - worse} better; "
        f"rows only in A: {len(r['only_in_a'])}, only in B: {len(r['only_in_b'])}</p>",
    ]
    deltas = [y - x for x, y in comp.row_means]
    # The difference and the changes are B's (A is the baseline): drawn in B's colour.
    plots = [
        svg.interval(diff, lo, hi, title=f"mean difference of {r['metric']} (B - A)",
                     label=f"B - A {diff:+.4f}", fill=svg.color(comp.other)),
        svg.scatter(comp.row_means, title=f"{r['metric']} per row",
                    xlabel=f"A: {a.name}", ylabel=f"B: {b.name}"),
        svg.histogram([("B - A", deltas)], title=f"per-row change of {r['metric']}",
                      xlabel="B - A (share of rows)", colors=[svg.color(comp.other)]),
    ]  # fmt: skip
    return title + "".join(lines) + f'<div class="plots">{"".join(plots)}</div>'


def _failures(data: ReportData) -> str:
    parts = ['<section id="failures"><h2>Failures</h2>']
    for i, c in enumerate(data.configs):
        parts.append(f"<h3>{_swatch(i)}{escape(c.name)}</h3>")
        failures, scoring = c.groups["failures"], c.groups["scoring_errors"]
        if not failures and not scoring:
            parts.append('<p class="muted">no failed runs and no scoring errors</p>')
            continue
        rows = [(g["count"], describe_cause(g), g["example"]) for g in failures]
        rows += [(g["count"], f"scoring error in {fn}: {g['message']}", g["example"])
                 for fn, groups in scoring.items() for g in groups]  # fmt: skip
        body = "".join(
            f'<tr><td class="num">{n}</td><td>{escape(cause)}</td><td><a href="#sample='
            f'{escape(example)}">{escape(_short(example))}</a></td></tr>'
            for n, cause, example in rows
        )
        parts.append(f'<table><tr><th class="num">runs</th><th>cause</th><th>example</th></tr>'
                     f"{body}</table>")  # fmt: skip
    parts.append("</section>")
    return "".join(parts)


def _short(example: str) -> str:
    row, _, run = example.rpartition(".")
    return f"{row[:12]}.{run}"


def _samples(data: ReportData) -> str:
    heads = "".join(f'<th class="num">{_swatch(i)}{escape(c.name)}</th>'
                    for i, c in enumerate(data.configs))  # fmt: skip
    heads += "".join(f'<th class="num">{_swatch(i)}&#916; {escape(data.configs[i].name)}</th>'
                     for i in range(1, len(data.configs)))  # fmt: skip
    metric = escape(data.metric or "-")
    several = len(data.configs) > 1
    filters = (
        '<option value="all">all samples</option><option value="failed">failed or a '
        "scoring error</option>"
    )
    if several:
        filters += ('<option value="changed">score differs from the first config</option>'
                    '<option value="worse">worse than the first config</option>')  # fmt: skip
    sort = ('<label>order <select id="sort"><option value="dataset">dataset</option>'
            + ('<option value="delta">change, regressions first</option>' if several else "")
            + "</select></label>")  # fmt: skip
    return (
        '<section id="samples"><h2>Samples</h2>'
        f'<p class="muted">score column: {metric}. Click a row to see its conversation, '
        "scores, errors and usage.</p>"
        f'<div class="controls"><label>show <select id="filter">{filters}</select></label>'
        f"{sort}"
        '<input id="search" type="search" placeholder="search prompt or row key">'
        '<button id="prev" type="button">previous</button>'
        '<button id="next" type="button">next</button><span id="page-info"></span></div>'
        '<table id="samples-table"><thead><tr><th class="num">row</th><th>key.run</th>'
        f'<th>prompt</th>{heads}</tr></thead><tbody id="samples-body"></tbody></table>'
        "</section>"
    )
