"""The style sheet and script the HTML report inlines (the page fetches nothing).

The script builds the samples table and the sample panel from the page's JSON data element,
setting text only through ``textContent``: model output is shown as text, never parsed as
HTML, whatever it contains."""

from __future__ import annotations

CSS = """
:root { --fg: #1d1f23; --muted: #5f6672; --line: #d9dde3; --bg: #fff; --soft: #f4f6f8;
  --bad: #b42318; --good: #067647; --accent: #0072b2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0; padding: 0 24px 48px; }
header { border-bottom: 1px solid var(--line); padding: 16px 0 8px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
nav a { margin-right: 14px; }
a { color: var(--accent); }
.muted { color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.params th { width: 150px; }
.params td { min-width: 240px; max-width: 460px; overflow-wrap: anywhere; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; vertical-align: baseline; }
.plots { display: flex; flex-wrap: wrap; gap: 14px; }
svg.plot { background: var(--soft); border-radius: 6px; font-size: 10px; fill: var(--fg); }
svg.plot .title { font-size: 12px; font-weight: 600; }
svg.plot .axis { stroke: var(--muted); stroke-width: 1; }
svg.plot .ref { stroke: var(--muted); stroke-dasharray: 4 3; stroke-width: 1; }
svg.plot .ci { stroke: var(--fg); stroke-width: 2; }
.stat { font-size: 15px; margin: 4px 0; }
.bad { color: var(--bad); }
.good { color: var(--good); }
.controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 6px 0; }
#samples-table { width: 100%; }
#samples-table tbody tr { cursor: pointer; }
#samples-table tbody tr:hover { background: var(--soft); }
#samples-table tbody tr.selected { background: #dcecf7; }
#samples-table td.prompt { max-width: 420px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.failed { color: var(--bad); font-weight: 600; }
#samples-table tr.detail, #samples-table tr.detail:hover { background: var(--bg); cursor: auto; }
#sample-panel { border: 1px solid var(--line); border-radius: 8px; padding: 4px 14px 10px;
  margin: 4px 0 12px; max-width: 1400px; }
.sides { display: grid; gap: 14px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
.side { border-top: 3px solid var(--line); padding-top: 6px; min-width: 0; }
.msg { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 4px 8px; }
.msg .role { font-size: 11px; font-weight: 700; text-transform: uppercase; color: var(--muted); }
.msg.assistant { background: #f1f7fc; }
.msg.system { background: var(--soft); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 2px 0; font: 13px/1.4 ui-monospace,
  SFMono-Regular, Menlo, Consolas, monospace; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 6px 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; overflow-wrap: anywhere; }
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("osmo-data").textContent);
  var PAGE = 50;
  var state = { filter: "all", query: "", sort: "dataset", page: 0, shown: [], selected: null };
  var byName = {};
  data.samples.forEach(function (e, i) { byName[e[0] + "." + e[1]] = i; });
  var ncfg = data.configs.length;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function field(row, name) {
    if (!row) { return undefined; }
    for (var k in row) { if (k.toLowerCase() === name) { return row[k]; } }
    return undefined;
  }
  function text(content) {
    if (Array.isArray(content)) {
      return content.map(function (p) { return (p && p.text) || ""; }).join("");
    }
    return content === undefined || content === null ? "" : String(content);
  }
  function json(v) { return typeof v === "string" ? v : JSON.stringify(v); }
  function promptMessages(row) {
    var msgs = field(row, "messages");
    if (Array.isArray(msgs)) { return msgs; }
    var out = [];
    var system = field(row, "system_prompt");
    if (system) { out.push({ role: "system", content: system }); }
    out.push({ role: "user", content: field(row, "user_prompt") });
    return out;
  }
  function promptOf(row) {
    var msgs = promptMessages(row);
    for (var i = msgs.length - 1; i >= 0; i--) {
      if (msgs[i] && msgs[i].role === "user") { return text(msgs[i].content); }
    }
    return "";
  }
  function num(v) {
    if (v === undefined || v === null) { return "-"; }
    return Number.isInteger(v) ? String(v) : v.toFixed(4);
  }
  function cellText(s) {
    if (!s) { return "-"; }
    if (s.status === "failed") { return "failed"; }
    if (s.value === undefined) { return s.scoring_errors ? "error" : "-"; }
    return num(s.value);
  }
  function delta(e, i) {
    var a = e[3][0], b = e[3][i];
    if (!a || !b || a.value === undefined || b.value === undefined) { return null; }
    return b.value - a.value;
  }
  function anyDelta(e, test) {
    for (var i = 1; i < ncfg; i++) {
      var d = delta(e, i);
      if (d !== null && test(d)) { return true; }
    }
    return false;
  }
  function matches(e) {
    var f = state.filter;
    if (f === "failed" && !e[3].some(function (s) {
      return s && (s.status === "failed" || s.scoring_errors);
    })) { return false; }
    if (f === "changed" && !anyDelta(e, function (d) { return d !== 0; })) { return false; }
    if (f === "worse" && !anyDelta(e, function (d) { return d < 0; })) { return false; }
    if (state.query) {
      var q = state.query.toLowerCase();
      var row = data.rows[e[0]];
      if (e[0].indexOf(q) !== 0 && promptOf(row).toLowerCase().indexOf(q) < 0) { return false; }
    }
    return true;
  }
  function sortKey(e) {
    var d = ncfg > 1 ? delta(e, 1) : null;
    return d === null ? Infinity : d;
  }

  function render() {
    var shown = data.samples.map(function (e, i) { return i; })
      .filter(function (i) { return matches(data.samples[i]); });
    if (state.sort === "delta") {
      shown.sort(function (x, y) { return sortKey(data.samples[x]) - sortKey(data.samples[y]); });
    }
    state.shown = shown;
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var body = document.getElementById("samples-body");
    body.textContent = "";
    shown.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (i) {
      var e = data.samples[i];
      var tr = el("tr");
      tr.dataset.sample = e[0] + "." + e[1];
      tr.tabIndex = 0;
      tr.appendChild(el("td", "num", e[2] === null ? "-" : e[2]));
      tr.appendChild(el("td", "key", e[0].slice(0, 12) + "." + e[1]));
      tr.appendChild(el("td", "prompt", promptOf(data.rows[e[0]])));
      for (var c = 0; c < ncfg; c++) {
        var s = e[3][c];
        var td = el("td", "num", cellText(s));
        if (s && (s.status === "failed" || s.scoring_errors)) { td.classList.add("failed"); }
        tr.appendChild(td);
      }
      for (var k = 1; k < ncfg; k++) {
        var d = delta(e, k);
        var dt = el("td", "num", d === null ? "-" : (d > 0 ? "+" : "") + num(d));
        if (d) { dt.classList.add(d < 0 ? "bad" : "good"); }
        tr.appendChild(dt);
      }
      body.appendChild(tr);
    });
    openDetail();
    document.getElementById("page-info").textContent = shown.length + " of " +
      data.samples.length + " samples; page " + (state.page + 1) + " of " + pages;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
  }

  function kv(dl, key, value) {
    dl.appendChild(el("dt", null, key));
    dl.appendChild(el("dd", null, value));
  }
  function message(m) {
    var box = el("div", "msg " + String((m && m.role) || ""));
    box.appendChild(el("div", "role", (m && m.role) || "?"));
    var body = text(m && m.content);
    if (m && m.tool_calls) { body += (body ? "\n" : "") + JSON.stringify(m.tool_calls); }
    box.appendChild(el("pre", null, body));
    return box;
  }
  function side(s, c, row) {
    var box = el("div", "side");
    box.style.borderTopColor = data.configs[c].color;
    box.appendChild(el("h3", null, data.configs[c].name));
    if (!s) {
      box.appendChild(el("p", "muted", "no such run in this config"));
      return box;
    }
    var dl = el("dl", "kv");
    kv(dl, "status", s.status);
    Object.keys(s.scores || {}).sort().forEach(function (k) {
      kv(dl, "score " + k, json(s.scores[k]));
    });
    Object.keys(s.scoring_errors || {}).sort().forEach(function (k) {
      kv(dl, "scoring error " + k, s.scoring_errors[k]);
    });
    if (s.error) {
      var err = s.error;
      kv(dl, "error", (err.type || "error") + (err.status ? " " + err.status : "") + ": " +
        (err.message || ""));
    }
    if (s.usage) {
      kv(dl, "usage", Object.keys(s.usage).sort().map(function (k) {
        return k + " " + s.usage[k];
      }).join(", "));
    }
    if (s.latency_s !== undefined) { kv(dl, "latency", s.latency_s.toFixed(3) + " s"); }
    box.appendChild(dl);
    var msgs = s.messages;
    if (!msgs) {
      box.appendChild(el("p", "muted", "the run failed: the row's prompt"));
      msgs = promptMessages(row);
    }
    var conv = el("div", "conversation");
    msgs.forEach(function (m) { conv.appendChild(message(m)); });
    box.appendChild(conv);
    return box;
  }
  function panelFor(name) {
    var e = data.samples[byName[name]];
    var row = data.rows[e[0]];
    var panel = el("div");
    panel.id = "sample-panel";
    panel.appendChild(el("h3", null, "row " + (e[2] === null ? "-" : e[2]) + " (" + e[0] +
      "), run " + e[1]));
    var dl = el("dl", "kv");
    var gt = field(row, "ground_truth");
    if (gt !== undefined) { kv(dl, "ground truth", json(gt)); }
    var meta = {};
    var hidden = ["user_prompt", "system_prompt", "messages", "ground_truth"];
    Object.keys(row || {}).forEach(function (k) {
      if (hidden.indexOf(k.toLowerCase()) < 0) { meta[k] = row[k]; }
    });
    if (Object.keys(meta).length) { kv(dl, "metadata", JSON.stringify(meta)); }
    panel.appendChild(dl);
    var sides = el("div", "sides");
    for (var c = 0; c < ncfg; c++) { sides.appendChild(side(e[3][c], c, row)); }
    panel.appendChild(sides);
    return panel;
  }
  // The open sample shows in a row of its own under the sample's row, so the table keeps
  // its place; it is drawn from the data when opened, never before.
  function openDetail() {
    var body = document.getElementById("samples-body");
    var at = null;
    body.querySelectorAll("tr[data-sample]").forEach(function (tr) {
      var on = tr.dataset.sample === state.selected;
      tr.classList.toggle("selected", on);
      if (on) { at = tr; }
    });
    if (!at) { return null; }
    var detail = el("tr", "detail");
    var td = el("td");
    td.colSpan = at.children.length;
    td.appendChild(panelFor(state.selected));
    detail.appendChild(td);
    at.after(detail);
    return at;
  }
  function show(name, scroll) {
    if (byName[name] === undefined) { return; }
    state.selected = state.selected === name && !scroll ? null : name;
    var pos = state.shown.indexOf(byName[name]);
    if (pos < 0) {  // filtered out: show every sample again
      state.filter = "all"; state.query = "";
      document.getElementById("filter").value = "all";
      document.getElementById("search").value = "";
      render();
      pos = state.shown.indexOf(byName[name]);
    }
    state.page = Math.floor(pos / PAGE);
    render();
    var at = document.querySelector("#samples-body tr.selected");
    if (at && scroll) { at.scrollIntoView(); }
  }
  function fromHash() {
    var m = /^#sample=(.+)$/.exec(location.hash);
    if (m) { show(decodeURIComponent(m[1]), true); }
  }

  document.getElementById("samples-body").addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr[data-sample]");
    if (tr) { show(tr.dataset.sample, false); }
  });
  document.getElementById("samples-body").addEventListener("keydown", function (ev) {
    var tr = ev.target.closest("tr[data-sample]");
    if (tr && ev.key === "Enter") { show(tr.dataset.sample, false); }
  });
  document.getElementById("filter").addEventListener("change", function (ev) {
    state.filter = ev.target.value; state.page = 0; render();
  });
  document.getElementById("sort").addEventListener("change", function (ev) {
    state.sort = ev.target.value; state.page = 0; render();
  });
  document.getElementById("search").addEventListener("input", function (ev) {
    state.query = ev.target.value.trim(); state.page = 0; render();
  });
  document.getElementById("prev").addEventListener("click", function () {
    state.page -= 1; render();
  });
  document.getElementById("next").addEventListener("click", function () {
    state.page += 1; render();
  });
  window.addEventListener("hashchange", fromHash);
  render();
  fromHash();
})();
"""
