"""``phaseprobe show`` fits an 80-column terminal for every run kind.

Tiny runs of every kind (sweep, a --grid folder, connect, basins, grok, dln, dln-grid,
dln-escape, escape) are made once per session through the real command, in-process; ``show``
with ``COLUMNS=80`` must print no line wider than 80 characters and never ``nan``; ``--wide``
shows every column (at least as many header words as the fitted view). The result tables that
connect, basins and escape print at the end of their run fit 80 columns as well.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tiny_runs import invoke, tiny_grid, tiny_sweep

DLN_TEACHER = ["--singular-values", "4,1", "--set", "teacher.in_dim=3", "--set", "teacher.out_dim=3",
               "--set", "integrate.delta=0.2", "--set", "integrate.chunk=32"]
GROK = """[grok]
name = "show-grok"
setup = "quick"
p = 11
train_frac = 0.6
weight_decays = [0.0, 3.0]
init_scales = [1.0]
steps = 60
n_records = 6
width = 8
embed_dim = 4
pieces_per_chunk = 6

[grok.hysteresis]
enabled = true
weight_decays = "0.1,1"
steps_per_point = 10

[grok.geometry]
enabled = false
"""

COMMANDS = {
    "connect": ["connect", "--n-train", "120", "--width", "4", "--depth", "1", "--n-strengths", "4", "--bezier-epochs", "2",
                "--set", "activation=tanh", "--set", "start_epochs=8", "--set", "epochs=3", "--set", "patience=null",
                "--set", "n_points=5", "--set", "saddle_steps=1", "--set", "saddle_subset=60", "--set", "lr=0.01",
                "--no-figures"],
    "basins": ["basins", "--n-train", "120", "--strengths", "lin:0:0.08:5", "--set", "width=4", "--set", "activation=tanh",
               "--set", "start_epochs=20", "--set", "epochs=5", "--set", "lr=0.01", "--set", "min_jump=0.02",
               "--set", "k_sigma=1", "--set", "bisect_max_steps=2", "--set", "saddle_steps=1", "--set", "saddle_subset=60",
               "--set", "hessian_subset=60", "--set", "max_nest=1", "--no-figures"],
    "dln": ["dln", "--depth", "2", "--gamma", "3", "--t-max", "5", "--no-certify", "--no-figures"] + DLN_TEACHER,
    "dln-grid": ["dln", "--phase-diagram", "--gammas", "0.5,2", "--widths", "4,6", "--seeds", "0", "--grid-depth", "2",
                 "--t-max", "3", "--set", "grid.loss_tol=1e-3", "--no-figures"] + DLN_TEACHER,
    "dln-escape": ["dln", "--escape", "--set", "escape.depths=[2]", "--set", "escape.width=4",
                   "--set", "escape.sigmas_depth2=[0.01,0.001]", "--no-figures"] + DLN_TEACHER,
    "escape": ["escape", "--replicas", "4", "--barrier-ratios", "3,5", "--steps", "600", "--set", "n_pieces=2", "--no-figures"],
}
KINDS = ["sweep", "grid", *COMMANDS, "grok"]
_RUNS: dict[str, tuple[Path, str]] = {}


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("show80")


def make_run(root: Path, kind: str) -> tuple[Path, str]:
    """The run folder of ``kind`` and its command's stdout (made once per session)."""
    if kind not in _RUNS:
        if kind == "sweep":
            _RUNS[kind] = tiny_sweep(root)
        elif kind == "grid":
            _RUNS[kind] = tiny_grid(root)
        elif kind == "grok":
            spec = root / "grok.toml"
            spec.write_text(GROK)
            out = root / "grok"
            r = invoke("grok", "--spec", str(spec), "--no-figures", "--out", str(out))
            assert r.exit_code == 0, r.output[-3000:]
            _RUNS[kind] = (out, r.stdout)
        else:
            out = root / kind
            r = invoke(*COMMANDS[kind], "--out", str(out))
            assert r.exit_code == 0, r.output[-3000:]
            _RUNS[kind] = (out, r.stdout)
    return _RUNS[kind]


def too_wide(text: str, width: int = 80) -> list[str]:
    return [ln for ln in text.splitlines() if len(ln) > width]


def has_nan(text: str) -> bool:
    return re.search(r"\bnan\b", text, flags=re.IGNORECASE) is not None


@pytest.mark.parametrize("kind", KINDS)
def test_show_fits_80_columns(root, kind):
    run, _ = make_run(root, kind)
    r = invoke("show", str(run), columns=80)
    assert r.exit_code == 0, r.output[-3000:]
    assert not too_wide(r.stdout), "\n".join(too_wide(r.stdout))
    assert not has_nan(r.stdout), r.stdout
    w = invoke("show", str(run), "--wide", columns=80)
    assert w.exit_code == 0, w.output[-3000:]
    assert "left out to fit" not in w.stdout
    assert len(w.stdout.split()) >= len(r.stdout.split()) - 10 * r.stdout.count("left out to fit")


@pytest.mark.parametrize("kind", ["connect", "basins", "escape"])
def test_command_result_tables_fit_80_columns(root, kind):
    _, stdout = make_run(root, kind)
    assert not too_wide(stdout), "\n".join(too_wide(stdout))
    assert not has_nan(stdout), stdout
