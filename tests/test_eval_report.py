"""`osmo eval report`: the HTML page of stored configs, opened in a real headless Chromium
(Debian's `chromium`, driven by playwright) after real evals of the demo's agent against the
mock model server, run by the installed CLI in subprocesses.

The browser test is in the slow tier (`--runslow`; `make test-browser`, which `.ci/run`
runs). Without a browser (or playwright) it skips on a developer's machine and fails under CI
(`CI` set), where the Makefile installs chromium first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osmo_store.eval import report_svg
from osmo_store.testing.mockserver import MockServer

from . import test_eval_report as this
from .conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
# What a headless run needs in a container (no sandbox, no GPU) and what keeps the browser
# from reaching for the network on its own (updates, sync, QUIC probes).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
ROWS = 30
# Model output that would run if the page put it into HTML unescaped: the mock model echoes
# a prompt it cannot solve, so this row's answer is this text.
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
# A label is the user's text too: it is shown in headings, table heads and plot legends.
LABELS = {"broken": "<script>window.__pwned = 3</script>broken"}
SCORING = """
def exact(solution_str, ground_truth, extra_info):
    return solution_str.strip() == str(ground_truth).strip()


def judged(solution_str, ground_truth, extra_info):
    try:
        return {"score": float(float(solution_str) == float(ground_truth)),
                "off": abs(float(solution_str) - float(ground_truth))}
    except ValueError:
        raise ValueError(f"cannot judge {solution_str!r}") from None
"""


def osmo(project: Path, *argv: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "osmo"), "--store", str(project / "store"), *argv]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def evals(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two configs of the demo's agent (one turn: its answer is the model's) on 30 rows of
    its dataset plus a row whose answer is HTML, n=2: ``good`` (a model that answers right)
    and ``worse`` (a seeded 30% of answers wrong, 10% of calls failing with HTTP 500 and no
    retries), and ``broken`` (every call fails). Built once; the tests only read them."""
    project = tmp_path_factory.mktemp("report")
    shutil.copy(ROOT / "examples" / "agent.py", project)
    lines = (ROOT / "examples" / "arithmetic.jsonl").read_text().splitlines()[:ROWS]
    lines.append(json.dumps({"id": "hostile", "user_prompt": HOSTILE, "ground_truth": "1"}))
    (project / "data.jsonl").write_text("\n".join(lines) + "\n")
    (project / "fns.py").write_text(SCORING)
    ids = {}
    servers = {"good": MockServer(), "worse": MockServer(error_rate=0.3, fail_rate=0.1, seed=7),
               "broken": MockServer(fail_rate=1.0)}  # fmt: skip
    try:
        for name, srv in servers.items():
            done = osmo(project, "--create", "eval", "-d", "data.jsonl", "--model", "toy",
                        "--base-url", srv.base_url, "--agent", "agent.py:solve",
                        "--eval-fn", "fns.py:exact", "--eval-fn", "fns.py:judged", "--n", "2",
                        "--temperature", "0.7", "--max-turns", "1", "--max-retries", "0",
                        "--label", LABELS.get(name, name), "--json", "-q")  # fmt: skip
            assert done.returncode == (3 if name == "broken" else 0), done.stderr
            ids[name] = json.loads(done.stdout)["config_id"]
    finally:
        for srv in servers.values():
            srv.close()
    report = project / "out" / "report.html"
    done = osmo(project, "eval", "report", "good", ids["worse"][:8], "-o", str(report))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"to {report}")
    return {"project": project, "report": report, **ids}


def _chromium():
    """playwright's sync API and the browser's path; skips (fails under CI) without them."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.access(CHROMIUM, os.X_OK):
        missing = "playwright" if sync_playwright is None else CHROMIUM
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is missing: CI must run the browser test (make test "
                        "installs chromium)")  # fmt: skip
        pytest.skip(f"{missing} is missing (apt-get install chromium; pip install playwright)")
    return sync_playwright


# Seconds of browser start and page work on top of the evals (4 s idle, 8 s on a busy
# 2-core machine): the slow tier, which .ci/run runs with the browser installed.
@pytest.mark.slow
def test_the_report_works_in_a_real_browser(evals, tmp_path: Path) -> None:
    sync_playwright = _chromium()
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: m.type in ("error", "warning")
                    and problems.append(f"console {m.type}: {m.text}"))  # fmt: skip
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(evals["report"].as_uri())
            page.wait_for_selector("#samples-body tr")
            _check_plots(page)
            _check_a_click_shows_the_conversation(page)
            _check_model_output_is_inert(page)
            _check_a_failure_example_opens_its_sample(page)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert problems == []
    # Self-contained: the page asked for nothing but itself.
    assert requests == [evals["report"].as_uri()]


def _check_plots(page) -> None:
    plots = page.locator("svg.plot")
    # exact, judged/off, judged/score: a histogram each; the comparison: interval, scatter
    # and per-row changes
    assert plots.count() == 6
    for i in range(plots.count()):
        box = plots.nth(i).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50
        marks = plots.nth(i).locator("rect, circle")
        assert marks.count() > 0
        drawn = marks.first.bounding_box()
        assert drawn and drawn["width"] > 0 and drawn["height"] > 0
    assert "B - A = -" in page.locator("#comparison").inner_text()  # the seeded regression


def _check_a_click_shows_the_conversation(page) -> None:
    assert page.locator("#sample-panel").is_hidden()
    first = json.loads(page.locator("#osmo-data").text_content())["samples"][0]
    page.locator("#samples-body tr").first.click()
    panel = page.locator("#sample-panel")
    assert panel.is_visible()
    text = panel.inner_text()
    assert f"row 0 ({first[0]}), run 0" in text
    assert "What is (21 + 52) * 3?" in text and "219" in text  # the prompt, the answer
    assert "score exact" in text and "usage" in text and "completion_tokens" in text
    assert panel.locator(".side").count() == 2  # both configs' runs side by side


def _check_model_output_is_inert(page) -> None:
    page.locator("#search").fill("window.__pwned")
    rows = page.locator("#samples-body tr")
    assert rows.count() == 2  # the hostile row's two runs
    rows.first.click()
    panel = page.locator("#sample-panel")
    assert HOSTILE in panel.inner_text()  # shown as text...
    assert page.evaluate("window.__pwned") is None  # ...never run
    assert panel.locator("script, img").count() == 0
    assert "scoring error judged\nValueError: cannot judge '<script>" in panel.inner_text()
    page.locator("#search").fill("")


def _check_a_failure_example_opens_its_sample(page) -> None:
    failures = page.locator("#failures")
    assert "model_error 500" in failures.inner_text()
    failures.locator("tr", has_text="model_error 500").locator("a").first.click()
    shown = page.locator("#sample-panel").inner_text()
    assert "the run failed: the row's prompt" in shown and "model_error 500" in shown


def test_user_strings_are_escaped_in_the_html(evals) -> None:
    """Without a browser: the page has exactly its two script elements, and the hostile
    answer (in the sample data) and the scoring error quoting it (in the failures table)
    are there only escaped."""
    html = evals["report"].read_text()
    assert html.count("<script") == 2
    assert "<img" not in html and "window.__pwned = 1</script>" not in html
    assert "cannot judge &#x27;&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_one_config_has_no_comparison(evals) -> None:
    out = evals["project"] / "one.html"
    done = osmo(evals["project"], "eval", "report", "good", "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert 'id="comparison"' not in html and 'id="scores"' in html
    data = html.split('id="osmo-data">')[1].split("</script>")[0]
    table = json.loads(data)
    assert len(table["configs"]) == 1 and len(table["samples"]) == 2 * (ROWS + 1)


def test_bad_input_is_a_one_line_error_before_any_work(evals) -> None:
    project = evals["project"]
    (project / "a-file").write_text("")
    cases = [
        (["nosuchconfig"], "html.html", "no eval config matches"),
        (["good", "good"], "twice.html", "is given twice"),
        (["good", "--metric", "nope"], "metric.html", "no config has a 'nope' score"),
        (["nosuchconfig"], "a-file/report.html", "a-file is not a directory"),
        (["good"], "out", "is a directory"),
    ]
    for argv, output, message in cases:
        done = osmo(project, "eval", "report", *argv, "-o", output)
        assert done.returncode == 1, (argv, done.stderr)
        first = done.stderr.splitlines()[0]
        assert first.startswith("osmo: error: ") and message in first, done.stderr
        assert "Traceback" not in done.stderr
        assert not (project / output).is_file() or output == "a-file"


def test_a_config_with_no_scored_run_is_reported_not_compared(evals) -> None:
    out = evals["project"] / "broken.html"
    done = osmo(evals["project"], "eval", "report", "good", evals["broken"][:8], "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert html.count("<script") == 2 and "&lt;script&gt;window.__pwned = 3" in html
    assert f"not compared: config {evals['broken'][:12]} has no scored run" in html
    assert "model_error 500" in html  # its failure groups


def test_without_a_browser_the_test_skips_but_fails_under_ci(monkeypatch) -> None:
    monkeypatch.setattr(this, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        this._chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser test"):
        this._chromium()


def test_plots_are_well_formed_svg_with_escaped_labels() -> None:
    """In-process: each plot parses as XML (a label with markup stays text), 0/1 scores get
    a bar per value, many distinct values get ranges, and a scatter of 10,000 rows of 0/1
    scores is at most four points."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    evil = "<b>a&b</b>"
    discrete = report_svg.histogram([(evil, [0.0, 1.0, 1.0]), ("b", [1.0])], title=evil,
                                    xlabel=evil)  # fmt: skip
    tree = ET.fromstring(discrete)
    assert tree.find(f"{ns}text").text == evil
    assert len(tree.findall(f"{ns}rect")) == 3  # a: 0 and 1; b: 1
    continuous = ET.fromstring(report_svg.histogram([("a", [i / 99 for i in range(100)])],
                                                    title="t", xlabel="x"))  # fmt: skip
    assert len(continuous.findall(f"{ns}rect")) == 20
    rows = [(float(i % 2), float(i % 3 == 0)) for i in range(10_000)]
    points = ET.fromstring(report_svg.scatter(rows, title="t", xlabel=evil, ylabel=evil))
    drawn = [c for c in points.findall(f"{ns}circle") if c.find(f"{ns}title") is not None]
    assert len(drawn) == 4  # and the legend's three dots, which have no title
    ET.fromstring(report_svg.interval(-0.2, -0.3, -0.1, title=evil, label=evil))


def test_a_config_whose_eval_function_always_raised_is_still_reported(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Its default metric (the eval function's) has no value anywhere: the page is written,
    with the summary, the failures and "no scored runs" where the plots would be. A metric
    the user asks for by name that no config has stays an error."""
    from osmo_store.cli.main import main

    monkeypatch.chdir(tmp_path)
    rows = [{"user_prompt": f"What is {i} + 1?", "ground_truth": str(i + 1)} for i in range(3)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fns.py").write_text(
        "def f(solution_str, ground_truth, extra_info):\n    raise ValueError('never scores')\n"
    )
    store = ["--store", str(tmp_path / "store")]
    with MockServer() as srv:
        main([*store, "eval", "-d", "data.jsonl", "--model", "m", "--base-url", srv.base_url,
              "--eval-fn", "fns.py:f", "-q", "--label", "unscored"])  # fmt: skip
    capsys.readouterr()
    assert main([*store, "eval", "report", "unscored", "-o", "r.html"]) == 0
    assert capsys.readouterr().out.startswith("wrote a report of 1 config (3 samples)")
    html = (tmp_path / "r.html").read_text()
    scores = html.split('<section id="scores">')[1].split("</section>")[0]
    assert "no scored runs" in scores and "<svg" not in scores
    assert "scoring error in f: ValueError: never scores" in html  # the failures
    assert "primary score" in html and "3 ok, 0 failed, 3 with scoring errors" in html
    assert main([*store, "eval", "report", "unscored", "--metric", "f", "-o", "x.html"]) == 1
    assert "no config has a 'f' score" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_comparison_colours_say_what_they_mean(evals) -> None:
    """The per-row scatter: grey unchanged, red worse, green better (none of them a
    config's colour), with a legend saying so. The mean difference and the per-row changes
    describe config B: drawn in B's colour, not A's."""
    import re

    html = evals["report"].read_text()
    comparison = html.split('<section id="comparison">')[1].split("</section>")[0]
    interval, scatter, changes = re.findall(r'<svg class="plot".*?</svg>', comparison)
    b = report_svg.color(1)
    assert re.findall(r'<circle [^>]*fill="([^"]+)"', interval) == [b]
    assert set(re.findall(r'<rect [^>]*fill="([^"]+)"', changes)) == {b}
    points = re.findall(r'fill="([^"]+)" fill-opacity="[^"]+"><title>(A [^:]+):', scatter)
    by_title = {title: fill for fill, title in points}
    meaning = {"#999999": "unchanged", "#d62728": "worse", "#2ca02c": "better"}
    assert by_title["A 1, B 1"] == "#999999" and by_title["A 1, B 0"] == "#d62728"
    assert set(by_title.values()) <= set(meaning) and not set(meaning) & set(report_svg.COLORS)
    legend = re.findall(r'<circle [^>]*fill="([^"]+)"[^>]*/><text [^>]*>([^<]+)</text>', scatter)
    assert legend == [("#d62728", "B worse"), ("#999999", "unchanged"), ("#2ca02c", "B better")]
