"""``report.html`` of a run folder: figures, the spec, and tables, in one self-contained page.

Any command can add a section: :func:`write_report` collects every ``report_*.json`` section
file in the folder (written with :func:`add_section`), so the sweep, curvature, paths and
other analyses of one run end up on one page.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from phaseprobe.store.run_store import atomic_write_text

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}pre{background:#f7f7f7;padding:0.7em;font-size:12px;overflow:auto}
h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}"""


def add_section(run_dir: str | Path, key: str, title: str, text: str = "", figures: list[str] | None = None,
                tables: dict[str, pd.DataFrame] | None = None, order: int = 50) -> Path:
    """Write (or replace) one report section of a run folder, then rebuild report.html."""
    run_dir = Path(run_dir)
    sec = {
        "title": title, "text": text, "order": order,
        "figures": [str(Path(f).name) for f in (figures or [])],
        "tables": {k: v.to_dict(orient="split") for k, v in (tables or {}).items()},
    }
    p = run_dir / f"report_{key}.json"
    atomic_write_text(p, json.dumps(sec, default=str))
    write_report(run_dir)
    return p


def _table_html(split: dict) -> str:
    df = pd.DataFrame(split["data"], columns=split["columns"])
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    meta_p = run_dir / "spec.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    secs = []
    for p in sorted(run_dir.glob("report_*.json")):
        try:
            secs.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue
    secs.sort(key=lambda s: s.get("order", 50))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>phaseprobe report: {html.escape(run_dir.name)}</title>"
             f"<style>{CSS}</style></head><body><h1>phaseprobe report: {html.escape(run_dir.name)}</h1>"]
    if meta:
        parts.append(f"<p>kind: <b>{html.escape(str(meta.get('kind')))}</b> &middot; spec hash {html.escape(str(meta.get('spec_hash')))}"
                     f" &middot; phaseprobe {html.escape(str(meta.get('version')))}</p>")
    for s in secs:
        parts.append(f"<h2>{html.escape(s['title'])}</h2>")
        if s.get("text"):
            parts.append("".join(f"<p>{html.escape(line)}</p>" for line in s["text"].split("\n\n")))
        for name, t in s.get("tables", {}).items():
            parts.append(f"<h3>{html.escape(name)}</h3>" + _table_html(t))
        for f in s.get("figures", []):
            fp = run_dir / f
            if fp.exists():
                b64 = base64.b64encode(fp.read_bytes()).decode()
                parts.append(f"<div><img alt='{html.escape(f)}' src='data:image/png;base64,{b64}'><br><small>{html.escape(f)}</small></div>")
    if meta:
        parts.append("<h2>Spec</h2><pre>" + html.escape(json.dumps(meta.get("spec", {}), indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    out = run_dir / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out
