"""The HTML report of a run: self-contained (plotly.js embedded once), a table of contents,
scrolling tables, figures that open at full resolution, links to every data file, provenance and
wall time per phase; and, in headless chromium, its Plotly figures render with no console error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from phaseprobe.plots.report import add_section, record_provenance, write_report

from tiny_runs import tiny_grid, tiny_sweep

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

# captures uncaught errors and console.error calls into <body data-errors=...> once the page settles
CAPTURE = ("<script>window.__errs=[];window.addEventListener('error',function(e){window.__errs.push(String(e.message))});"
           "var _ce=console.error;console.error=function(){window.__errs.push(Array.from(arguments).join(' '));"
           "_ce.apply(console,arguments)};window.addEventListener('load',function(){setTimeout(function(){"
           "document.body.setAttribute('data-errors',JSON.stringify(window.__errs));},1000)});</script>")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    run, _ = tiny_sweep(tmp_path_factory.getbasetemp() / "views")
    return run


def test_sweep_report_is_self_contained_with_toc_links_and_provenance(sweep):
    page = (sweep / "report.html").read_text()
    assert page.count("var Plotly") <= 1 and page.count("<script type='text/javascript'>") == 1  # plotly.js once
    assert "Plotly.newPlot" in page and "<script src=" not in page  # nothing fetched from the network
    assert "<nav><b>Contents</b>" in page and "href='#s1'" in page and "<a id='s1'></a><h2>" in page
    assert "class='tablewrap'" in page and "overflow-x:auto" in page
    assert "data:image/png;base64" in page and ".fig.full img{max-width:none" in page
    files = [p.relative_to(sweep).as_posix() for p in (sweep / "records").iterdir()] + ["transitions.csv", "spec.json"]
    files += [p.relative_to(sweep).as_posix() for p in (sweep / "params").iterdir() if p.is_file()]
    for f in files:
        assert f"href='{f}'" in page, f
    prov = json.loads((sweep / "provenance.json").read_text())
    assert prov[0]["argv"] and prov[0]["jax"] and prov[0]["jaxlib"] and prov[0]["cores"] >= 1
    for k in ("Python", "jaxlib", "git_commit", "cpu", "accelerator"):
        assert k.lower() in page.lower()
    times = json.loads((sweep / "phase_times.json").read_text())
    assert times[0]["phase"] == "trainings" and times[0]["wall_s"] > 0
    assert "Wall time per phase" in page
    assert ">nan<" not in page


def test_sections_scroll_and_show_missing_as_dash(tmp_path):
    add_section(tmp_path, "t", "A wide table", "text", tables={"wide": pd.DataFrame({f"c{i}": [1.0, float("nan")] for i in range(40)})})
    page = (tmp_path / "report.html").read_text()
    assert "<div class='tablewrap'><table>" in page and "<td>—</td>" in page and ">nan<" not in page
    assert "Plotly.newPlot" not in page and "var Plotly" not in page  # no plotly.js without a plotly figure


def test_provenance_recorded_once_per_process(tmp_path):
    record_provenance(tmp_path)
    write_report(tmp_path)
    entries = json.loads((tmp_path / "provenance.json").read_text())
    assert len(entries) == 1 and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", entries[0]["date"])
    assert "git" in entries[0]["git_commit"] or len(entries[0]["git_commit"].split()[0]) == 40


def _load(page: Path, tmp: Path) -> str:
    probe = tmp / ("probe_" + page.name)  # self-contained: it renders from any folder
    probe.write_text(page.read_text().replace("<head>", "<head>" + CAPTURE, 1))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--dump-dom", "--virtual-time-budget=15000", probe.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["sweep", "grid"])
def test_report_renders_in_headless_chromium(kind, tmp_path_factory, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium installed: `apt-get install chromium` to run the browser test (.ci/run does)")
    root = tmp_path_factory.getbasetemp() / "views"
    run = tiny_sweep(root)[0] if kind == "sweep" else tiny_grid(root)[0]
    t0 = time.monotonic()
    dom = _load(run / "report.html", tmp_path)
    n_figs = (run / "report.html").read_text().count("Plotly.newPlot(")
    assert n_figs >= 1
    assert dom.count("class=\"plotly-fig js-plotly-plot\"") == n_figs, "not every figure was drawn"
    assert dom.count("class=\"main-svg\"") >= n_figs  # plotly draws its plots as SVG
    assert "class=\"scatterlayer" in dom  # the curves themselves
    m = re.search(r'data-errors="([^"]*)"', dom)
    assert m is not None, "the page did not finish loading"
    errors = json.loads(m.group(1).replace("&quot;", '"'))
    assert errors == [], errors
    # the capture itself works: a page with an error reports it
    bad = tmp_path / "bad.html"
    bad.write_text("<html><head></head><body><script>console.error('boom'); undefined_fn();</script></body></html>")
    dom = _load(bad, tmp_path)
    errors = json.loads(re.search(r'data-errors="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert "boom" in errors and any("undefined_fn" in e for e in errors)
    print(f"chromium: {kind} report rendered and checked in {time.monotonic() - t0:.1f} s")
