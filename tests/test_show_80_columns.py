"""``phaseprobe show`` fits an 80-column terminal for every run kind.

Tiny runs of every kind (sweep, a --grid folder, connect, basins, grok, dln, dln-grid,
dln-escape, escape) are made once per session through the real command, in-process; ``show``
with ``COLUMNS=80`` must print no line wider than 80 characters and never ``nan``; ``--wide``
shows every column (at least as many header words as the fitted view). The result tables that
connect, basins, escape, grok and the three dln modes print at the end of their run fit 80
columns as well, and their ``--wide`` (the same command rerun on its finished folder: nothing is
recomputed) prints every header in full.
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
    "dln": ["dln", "--depth", "2", "--width", "3", "--gamma", "8", "--t-max", "8", "--no-certify", "--no-figures"]
           + DLN_TEACHER,  # one plateau (rank 0) in the table
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


# Headers that only a console as wide as the table shows (the lowest-priority columns of each table).
WIDE_HEADERS = {
    "grok": ["t_train (steps)", "t_test (steps)", "final test acc", "||w||^2", "train acc", "loop"],
    "dln": ["learned singular values", "Hessian eigs < -tol", "lambda_min(H)", "escape order", "oracle 1/2 sum s_i^2"],
    "dln-grid": ["||theta_end - theta_0||", "relative", "plateaus", "first escape t"],
    "dln-escape": ["depth", "escape k", "measure", "measured", "theory"],
}


def rerun(root: Path, kind: str, *extra: str):
    """The command of ``kind`` rerun on its finished folder (a resume: analysis and tables only)."""
    out, _ = make_run(root, kind)
    if kind == "grok":
        args = ["grok", "--spec", str(root / "grok.toml"), "--no-figures", "--out", str(out)]
    else:
        args = [*COMMANDS[kind], "--out", str(out)]
    r = invoke(*args, *extra, columns=80)
    assert r.exit_code == 0, r.output[-3000:]
    return r.stdout


@pytest.mark.parametrize("kind", ["grok", "dln", "dln-grid", "dln-escape"])
def test_grok_and_dln_tables_fit_80_columns(root, kind):
    _, stdout = make_run(root, kind)
    assert not too_wide(stdout), "\n".join(too_wide(stdout))
    assert not has_nan(stdout), stdout
    assert "{'" not in stdout, stdout  # no Python dict printed for a reader
    wide = rerun(root, kind, "--wide")
    assert "left out to fit" not in wide, wide
    assert not has_nan(wide), wide
    flat = " ".join(wide.split())
    missing = [h for h in WIDE_HEADERS[kind] if h not in flat]
    assert not missing, (missing, wide)
    if kind == "dln":
        assert re.search(r"^0 +\S+ +\S+ +8\.48", wide, flags=re.MULTILINE), wide  # the plateau's row, every column


def test_dln_plateau_table_with_certificates_fits_80_columns():
    """Certified plateaus (a count with its tolerance, an uncomputed index, a missing escape order
    and a plateau never escaped) print without ``nan`` in 80 columns; a wide console shows every column."""
    import io

    from rich.console import Console

    from phaseprobe.commands.dln import print_plateaus
    from phaseprobe.dynamics.plateaus import LossPlateau

    def plateau(i, rank, cert, t_escape):
        return LossPlateau(index=i, t_start=0.31 * 10 ** i, t_end=0.5 * 10 ** i, level=8.5 / (i + 1), rank=rank,
                           stable_rank=float(rank), i_start=0, i_end=1, i_saddle=0, t_saddle=0.4, grad_norm=1e-3,
                           learned_sv=[3.99871234] * rank, t_escape=t_escape, oracle_level=8.5 / (i + 1), certificate=cert)

    cert = {"kind": "higher_order_saddle", "index": 6, "hess_tol": 0.4, "min_eig": -4.0, "escape_order": 3.0}
    nocount = {"kind": "strict_saddle", "index": -1, "hess_tol": 0.4, "min_eig": float("nan"), "escape_order": float("nan")}
    plats = [plateau(0, 0, cert, 1.262), plateau(1, 1, nocount, 4.5), plateau(2, 2, None, float("nan"))]
    for width, wide in ((80, False), (100_000, True)):
        buf = io.StringIO()
        dropped = print_plateaus(Console(file=buf, width=width, color_system=None), plats, 0.1)
        text = buf.getvalue()
        assert wide or not too_wide(text), "\n".join(too_wide(text))
        assert not has_nan(text), text
        assert bool(dropped) != wide and ("left out to fit" in text) != wide
        for word in ("higher-order", "strict", "not certified", "not reached"):
            assert word in text, (word, text)
        if wide:
            for cell in ("6 (tol 0.4)", "not computed", "3.999, 3.999", "none"):
                assert cell in text, (cell, text)
