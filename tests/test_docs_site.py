"""The documentation site builds with ``mkdocs build --strict`` (every page, the API reference
from the docstrings, the rendered tutorial and the figure gallery)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mkdocs_ready() -> str | None:
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
        import mkdocstrings_handlers.python  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as e:
        return f"the docs test needs mkdocs, mkdocstrings[python] and nbformat (requirements.lock): {e.name} is missing"
    return None


@pytest.mark.docs
def test_mkdocs_build_strict(tmp_path):
    missing = _mkdocs_ready()
    if missing:
        pytest.skip(missing)
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for page in ("index.html", "science/index.html", "conventions/index.html", "commands/index.html",
                 "api/index.html", "tutorial/index.html", "gallery/index.html"):
        assert (site / page).exists(), page
    api = (site / "api" / "index.html").read_text()
    import phaseprobe

    ids = set(re.findall(r'id="([^"]+)"', api))
    for name in phaseprobe.__all__:  # every exported name has its entry, rendered from its docstring
        assert any(i.endswith(f".{name}") for i in ids), name
    assert api.count("Arguments:") >= len(phaseprobe.__all__) - 2
    commands = (site / "commands" / "index.html").read_text()
    for cmd in ("sweep", "connect", "basins", "curvature", "grok", "dln", "show", "compare"):
        assert f"phaseprobe {cmd}" in commands, cmd
    gallery = (site / "gallery" / "index.html").read_text()
    assert "sweep_onset_depth2.png" in gallery and "Command:" in gallery
    assert (site / "sweep_onset_depth2.png").exists()
    tutorial = (site / "tutorial" / "index.html").read_text()
    assert "alpha_sweep" in tutorial
    shutil.rmtree(site, ignore_errors=True)
