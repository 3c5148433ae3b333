"""``report.html`` of a run folder: one self-contained, interactive page.

Any command can add a section: :func:`write_report` collects every ``report_*.json`` section
file in the folder (written with :func:`add_section`), so the sweep, curvature, paths and
other analyses of one run end up on one page. A section holds text, PNG figures, tables and
Plotly figures (``plotly=[fig, ...]``, stored as JSON).

The page opens offline: plotly.js is embedded once (however many interactive figures), PNGs
are embedded (a click shows one at full resolution, scrolling), tables scroll sideways rather
than clip. It carries a table of contents, links to every data file of the run (records/,
params/, CSVs, ...), and provenance: the commands that wrote the folder (date, full command
line, git commit when the working directory is in a repository, Python/JAX/jaxlib/phaseprobe
versions, machine: CPU model, cores, accelerator) from ``provenance.json``, and the wall time
of each phase from ``phase_times.json`` (written by :class:`phaseprobe.progress.ProgressReporter`).
For a sweep (and each sweep of a grid) the page adds interactive accuracy and ||w||^2 curves.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

from phaseprobe.store.run_store import atomic_write_text

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
.tablewrap{overflow-x:auto;max-width:100%;margin:0.5em 0 1.5em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}table.l td,table.l th{text-align:left}
.fig{overflow:auto;max-width:100%;margin:0.5em 0}.fig img{max-width:100%;border:1px solid #ddd;cursor:zoom-in}
.fig.full img{max-width:none;cursor:zoom-out}
pre{background:#f7f7f7;padding:0.7em;font-size:12px;overflow:auto}
h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}nav ol{columns:2}
.plotly-fig{margin:0.5em 0 1.5em}"""

JS = """document.querySelectorAll('.fig img').forEach(function(im){im.addEventListener('click',function(){
im.parentElement.classList.toggle('full');});});"""

DATA_GLOBS = ("records/*", "params/*", "*.csv", "*.json", "*.parquet", "*.png", "*.log", "*.toml", "*.npz",
              "cells/*/*.csv", "cells/*/*.png", "cells/*/records/*", "cells/*/spec.json", "cells/*/params/*")


# ---------------------------------------------------------------------------------------------
# sections


def add_section(run_dir: str | Path, key: str, title: str, text: str = "", figures: list[str] | None = None,
                tables: dict[str, pd.DataFrame] | None = None, order: int = 50, plotly: list | None = None) -> Path:
    """Write (or replace) one report section of a run folder, then rebuild report.html.

    **Arguments:**

    - `run_dir`: the run folder.
    - `key`: the section's key (its file is ``report_<key>.json``; the same key replaces it).
    - `title`, `text`: the heading and the text (paragraphs separated by blank lines).
    - `figures`: PNG files in the run folder (embedded; click for full resolution).
    - `tables`: name -> frame (scrolling HTML tables; missing values shown as —).
    - `order`: sections sort by it.
    - `plotly`: Plotly figures (or their dicts), drawn interactively.

    **Returns:** the section file's path.
    """
    run_dir = Path(run_dir)
    sec = {
        "title": title, "text": text, "order": order,
        "figures": [str(Path(f).name) for f in (figures or [])],
        "tables": {k: v.to_dict(orient="split") for k, v in (tables or {}).items()},
        "plotly": [_fig_json(f) for f in (plotly or [])],
    }
    p = run_dir / f"report_{key}.json"
    atomic_write_text(p, json.dumps(sec, default=str))
    write_report(run_dir)
    return p


def _fig_json(fig) -> str:
    if isinstance(fig, str):
        return fig
    if isinstance(fig, dict):
        return json.dumps(fig, default=str)
    return fig.to_json()


# ---------------------------------------------------------------------------------------------
# provenance


def _git_commit(cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    commit = r.stdout.strip()
    try:
        d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                           text=True, timeout=10)
        if d.returncode == 0 and d.stdout.strip():
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    return commit


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _nvidia_gpus() -> str | None:
    """The NVIDIA GPUs ``nvidia-smi`` lists (None when it is absent or fails)."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()] if r.returncode == 0 else []
    return f"{len(names)} NVIDIA GPU(s): " + ", ".join(names) if names else None


def _accelerator() -> str:
    """The JAX devices when JAX is already loaded (never loads it), else the NVIDIA GPUs
    ``nvidia-smi`` lists, else 'none found'."""
    jax = sys.modules.get("jax")
    if jax is None:
        return _nvidia_gpus() or "no GPU found (nvidia-smi absent; JAX not loaded by this command)"
    try:
        devs = jax.devices()
        kinds = sorted({f"{d.platform}: {getattr(d, 'device_kind', d.platform)}" for d in devs})
        return f"{len(devs)} device(s): " + ", ".join(kinds)
    except Exception as e:  # noqa: BLE001 -- a broken backend must not break the report
        return f"unknown ({type(e).__name__})"


def provenance() -> dict:
    """Where and how this process runs: date (UTC), command line, working directory, git commit,
    library versions and machine.

    **Returns:** a JSON-able dict.
    """
    cwd = Path.cwd()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": shlex.join(sys.argv) if sys.argv else "",
        "argv": list(sys.argv),
        "cwd": str(cwd),
        "git_commit": _git_commit(cwd) or "not in a git repository",
        "python": platform.python_version(),
        "phaseprobe": _version("phaseprobe"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "accelerator": _accelerator(),
        "pid": os.getpid(),
    }


def record_provenance(run_dir: str | Path) -> list[dict]:
    """Add this process's :func:`provenance` to ``RUN/provenance.json`` (once per process).

    **Returns:** every entry of the file, oldest first.
    """
    p = Path(run_dir) / "provenance.json"
    try:
        entries = json.loads(p.read_text()) if p.exists() else []
    except (OSError, ValueError):
        entries = []
    if not entries or entries[-1].get("pid") != os.getpid() or entries[-1].get("argv") != list(sys.argv):
        entries.append(provenance())
        atomic_write_text(p, json.dumps(entries, indent=1, default=str))
    return entries


# ---------------------------------------------------------------------------------------------
# html pieces


def _esc(v) -> str:
    return html.escape(str(v))


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "—" if v != v else f"{v:.4g}"
    return _esc(v)


def _table_html(split: dict) -> str:
    df = pd.DataFrame(split["data"], columns=split["columns"])
    return frame_html(df)


def frame_html(df: pd.DataFrame, cls: str = "") -> str:
    """A frame as an HTML table inside a sideways-scrolling box (missing values as —); ``cls``: a
    CSS class of the table (``"l"``: left-aligned text)."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    attr = f" class='{cls}'" if cls else ""
    return f"<div class='tablewrap'><table{attr}><tr>{head}</tr>{body}</table></div>"


def plotly_js() -> str:
    """The plotly.js bundle of the installed plotly (embedded once per page)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _plotly_div(fig_json: str, div_id: str) -> str:
    fig_json = fig_json.replace("</", "<\\/")  # no "</script>" inside the script
    return (f"<div class='plotly-fig' id='{div_id}'></div><script>(function(){{var f={fig_json};"
            f"Plotly.newPlot('{div_id}',f.data,f.layout||{{}},{{responsive:true,displaylogo:false}});}})();</script>")


def _data_files(run_dir: Path) -> list[Path]:
    seen: dict[str, Path] = {}
    for g in DATA_GLOBS:
        for p in sorted(run_dir.glob(g)):
            if p.is_file() and not p.name.startswith((".tmp", ".")) and p.name != "report.html":
                seen[str(p.relative_to(run_dir))] = p
    return [seen[k] for k in sorted(seen)]


def _files_html(run_dir: Path) -> str:
    files = _data_files(run_dir)
    if not files:
        return "<p>no data files yet</p>"
    groups: dict[str, list[Path]] = {}
    for p in files:
        rel = p.relative_to(run_dir)
        groups.setdefault(str(rel.parent) if str(rel.parent) != "." else "top level", []).append(p)
    out = []
    for g, ps in groups.items():
        items = "".join(f"<li><a href='{_esc(p.relative_to(run_dir).as_posix())}'>{_esc(p.relative_to(run_dir).as_posix())}</a>"
                        f" <small>({p.stat().st_size:,} bytes)</small></li>" for p in ps)
        opened = " open" if g == "top level" else ""
        out.append(f"<details{opened}><summary>{_esc(g)} ({len(ps)} files)</summary><ul>{items}</ul></details>")
    return "".join(out)


def _provenance_html(run_dir: Path) -> str:
    p = run_dir / "provenance.json"
    try:
        entries = json.loads(p.read_text()) if p.exists() else []
    except (OSError, ValueError):
        entries = []
    parts = []
    keys = ("date", "command", "cwd", "git_commit", "python", "jax", "jaxlib", "phaseprobe", "cpu", "cores",
            "accelerator", "platform")
    if entries:
        rows = [{"": k, **{f"#{i + 1}": e.get(k, "—") for i, e in enumerate(entries)}} for k in keys]
        parts.append("<h3>Commands that wrote this folder (oldest first)</h3>" + frame_html(pd.DataFrame(rows), "l"))
    t = run_dir / "phase_times.json"
    try:
        phases = json.loads(t.read_text()) if t.exists() else []
    except (OSError, ValueError):
        phases = []
    if phases:
        df = pd.DataFrame(phases).rename(columns={"wall_s": "wall time (s)", "done": "units done"})
        parts.append("<h3>Wall time per phase</h3>" + frame_html(df))
    else:
        parts.append("<p>wall time per phase: not recorded</p>")
    return "".join(parts)


def _sweep_interactive(run_dir: Path, label: str = "") -> list[str]:
    """Interactive curves of a sweep folder (empty when it has no records or plotly is missing)."""
    try:
        from phaseprobe.plots.interactive import sweep_plotly_figure
        from phaseprobe.store import RunStore

        df = RunStore(run_dir).load_records()
        if df.empty:
            return []
        tp = run_dir / "transitions.csv"
        try:
            tr = pd.read_csv(tp) if tp.exists() else None
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            tr = None
        return [sweep_plotly_figure(df, tr, title=label).to_json()]
    except ImportError:
        return []


# ---------------------------------------------------------------------------------------------
# the page


def write_report(run_dir: str | Path) -> Path:
    """Rebuild ``report.html`` from the folder's sections, data files and provenance.

    **Returns:** the report's path.
    """
    run_dir = Path(run_dir)
    record_provenance(run_dir)
    meta_p = run_dir / "spec.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    secs = []
    for p in sorted(run_dir.glob("report_*.json")):
        try:
            secs.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue
    secs.sort(key=lambda s: s.get("order", 50))
    kind = meta.get("kind")
    interactive: list[tuple[str, list[str]]] = []
    if kind == "sweep":
        interactive.append(("Interactive: accuracy and ||w||^2 against the strength", _sweep_interactive(run_dir)))
    elif kind == "grid" and meta.get("spec", {}).get("cell_kind", "sweep") == "sweep":
        figs = []
        for c in meta.get("spec", {}).get("cells", []):
            figs += _sweep_interactive(run_dir / "cells" / c["id"], label=f"cell {c['id']}")
        interactive.append(("Interactive: each cell's curves", figs))
    n_plotly = sum(len(s.get("plotly", [])) for s in secs) + sum(len(f) for _, f in interactive)

    toc, body = [], []
    def heading(title: str) -> str:
        anchor = f"s{len(toc) + 1}"
        toc.append(f"<li><a href='#{anchor}'>{_esc(title)}</a></li>")
        return f"<a id='{anchor}'></a><h2>{_esc(title)}</h2>"

    fig_i = 0
    for s in secs:
        body.append(heading(s["title"]))
        if s.get("text"):
            body.append("".join(f"<p>{_esc(line)}</p>" for line in s["text"].split("\n\n")))
        for fj in s.get("plotly", []):
            fig_i += 1
            body.append(_plotly_div(fj, f"plotly-{fig_i}"))
        for name, t in s.get("tables", {}).items():
            body.append(f"<h3>{_esc(name)}</h3>" + _table_html(t))
        for f in s.get("figures", []):
            fp = run_dir / f
            if fp.exists():
                b64 = base64.b64encode(fp.read_bytes()).decode()
                body.append(f"<div class='fig'><img alt='{_esc(f)}' title='click: full resolution' "
                            f"src='data:image/png;base64,{b64}'></div><small><a href='{_esc(f)}'>{_esc(f)}</a> "
                            "(click the figure for full resolution)</small>")
    for title, figs in interactive:
        if figs:
            body.append(heading(title))
            body.append("<p>Zoom by dragging, hover for values; click a legend entry to hide or show a branch's "
                        "seed mean or one seed, double-click to show it alone.</p>")
            for fj in figs:
                fig_i += 1
                body.append(_plotly_div(fj, f"plotly-{fig_i}"))
    if meta:
        body.append(heading("Spec"))
        body.append("<pre>" + _esc(json.dumps(meta.get("spec", {}), indent=2, default=str)) + "</pre>")
    body.append(heading("Data files"))
    body.append(_files_html(run_dir))
    body.append(heading("Provenance"))
    body.append(_provenance_html(run_dir))

    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>phaseprobe report: {_esc(run_dir.name)}</title>"
            f"<style>{CSS}</style>")
    if n_plotly:
        head += f"<script type='text/javascript'>{plotly_js()}</script>"
    head += "</head><body>"
    parts = [head, f"<h1>phaseprobe report: {_esc(run_dir.name)}</h1>"]
    if meta:
        parts.append(f"<p>kind: <b>{_esc(kind)}</b> &middot; spec hash {_esc(meta.get('spec_hash'))}"
                     f" &middot; phaseprobe {_esc(meta.get('version'))}</p>")
    parts.append("<nav><b>Contents</b><ol>" + "".join(toc) + "</ol></nav>")
    parts += body
    parts.append(f"<script>{JS}</script></body></html>")
    out = run_dir / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out
