"""``phaseprobe sweep``: accuracy phases against the L2 strength, with hysteresis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from phaseprobe.engine.grid import parse_grid
from phaseprobe.errors import SpecError
from phaseprobe.sweep.spec import DEFAULT_SPEC, apply_overrides, fit_default_batch, load_spec_file, make_spec

console = Console(stderr=True)


def _parse_classes(text: Optional[str]):
    """``--classes``: a class subset ``'0,1,2'`` or the first ``k`` classes ``'k'``."""
    if text is None:
        return None
    t = text.strip()
    try:
        if "," in t:
            return [int(x) for x in t.split(",") if x.strip()]
        return int(t)
    except ValueError:
        raise SpecError(f"classes: cannot read '{text}'; give class ids '0,1,2' or a count of first classes '3'") from None


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def sweep(
        cli: typer.Context,
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (see examples/); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a spec field: --set width=128 (repeatable)."),
        dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, cifar10 (--data-dir), gaussian-mixture, teacher, lowrank-linear, modular; your own arrays: --data"),
        classes: Optional[str] = typer.Option(None, help="class subset '0,1,2' or the first k classes 'k'"),
        data_dir: Optional[str] = typer.Option(None, help="folder with the IDX files (mnist, fashion-mnist)"),
        n_train: Optional[int] = typer.Option(None, help="training-set size (subset)"),
        model: Optional[str] = typer.Option(None, help="mlp, linear (deep linear), conv"),
        model_file: Optional[str] = typer.Option(None, "--model-file", help="your own model: FILE.py:FUNCTION, "
                                                 "FUNCTION(key, in_dim, out_dim) returns an Equinox module or an (init, apply) pair"),
        data_file: Optional[str] = typer.Option(None, "--data", help="your own arrays: FILE.npz with x_train, y_train, "
                                                "x_test, y_test (optional class_names)"),
        depth: Optional[int] = typer.Option(None, help="hidden layers (mlp) or weight matrices (linear)"),
        width: Optional[int] = typer.Option(None, help="hidden width"),
        activation: Optional[str] = typer.Option(None, help="relu, tanh, gelu, sigmoid, identity"),
        alphas: Optional[str] = typer.Option(None, help="grid: '1e-5:1e-1:41' (log, both ends > 0), 'lin:0:0.1:51' (linear; 0 = no penalty is allowed), or '0,0.001,0.01'"),
        convention: Optional[str] = typer.Option(None, help="'l2' (alpha*||w||^2) or 'wd' (beta/2*||w||^2)"),
        seeds: Optional[int] = typer.Option(None, help="number of seeds"),
        mode: Optional[str] = typer.Option(None, help="cold, up, down, loop"),
        optimizer: Optional[str] = typer.Option(None, help="adam, adamw, sgd, momentum, gd"),
        lr: Optional[float] = typer.Option(None, help="learning rate"),
        epochs: Optional[int] = typer.Option(None, "--epochs", "--steps", help="max epochs per strength (full batch: steps)"),
        batch: Optional[int] = typer.Option(None, help="minibatch size (omit: full batch)"),
        patience: Optional[int] = typer.Option(None, help="early stopping patience in epochs"),
        out: Path = typer.Option(Path("runs/sweep"), help="run folder (rerun with the same spec to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        grid: List[str] = typer.Option([], "--grid", help="Spec grid, one sweep per cell: --grid width=64,256 depth=1,2,3 "
                                       "(space-separated or repeated; list values in brackets: classes=[0,1],[0,1,2])."),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and report"),
        wide: bool = typer.Option(False, "--wide", help="print every table column (default: fit the terminal, 80 columns)"),
        refine: Optional[str] = typer.Option(None, "--refine", help="after the grid, bisect every transition and Maxwell "
                                             "point until its bracket is narrower than this: '2%' of the strength or "
                                             "an absolute width such as 0.0005 (spec: refine, refine_to)"),
    ):
        """Map accuracy phases against the L2 strength (cold, up, down or loop sweeps).

        With no flags it runs the embedded default: digits, MLP with two hidden layers, a loop
        sweep showing the first-order onset-of-learning transition and its hysteresis loop.
        """
        data = dict(DEFAULT_SPEC) if spec_file is None else load_spec_file(spec_file)
        flags = dict(dataset=dataset, classes=_parse_classes(classes), data_dir=data_dir, n_train=n_train, model=model,
                     depth=depth, width=width, activation=activation, alphas=alphas, convention=convention,
                     seeds=seeds, mode=mode, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch,
                     patience=patience)
        data.update({k: v for k, v in flags.items() if v is not None})
        data = own_model_and_data(data, model_file, data_file, model_given=model is not None)
        if refine is not None:
            data.update(refine=True, refine_to=refine)
        data = apply_overrides(data, sets)
        note = None
        if spec_file is None and batch is None and not any(s.split("=", 1)[0].strip() == "batch_size" for s in sets):
            data, note = fit_default_batch(data)
        spec = make_spec(data)
        from phaseprobe.engine import get_engine  # the numerical stack loads once the spec is valid
        from phaseprobe.sweep.driver import run_sweep
        from phaseprobe.sweep.summary import summarize

        if cli.args and not grid:
            raise SpecError(f"sweep: unexpected argument(s) '{' '.join(cli.args)}'; grid fields go after --grid, e.g. --grid width=64,256 depth=1,2")
        grid_fields = parse_grid(list(grid) + list(cli.args)) if grid else None
        eng = get_engine(engine, **({"address": address} if address else {}))
        if grid_fields is not None:
            _run_grid_command(data, grid_fields, out, eng, no_figures, wide)
            return
        banner = (f"[bold]phaseprobe sweep[/bold] {spec.name}: {spec.dataset}, "
                  + (f"model {Path(spec.model_file).name}" if spec.model_file else f"{spec.model} depth {spec.depth} width {spec.width}")
                  + f", mode {spec.mode}, {len(spec.alpha_grid())} strengths x {len(spec.seed_list())} seeds -> {out}")
        if note:  # printed with the banner, once the data and the run folder have passed their checks
            banner += "\n" + note
        check_model_file_resume(out, spec.model_dump())
        t0 = time.perf_counter()
        with reporter(out) as prog:
            df = run_sweep(spec, out, engine=eng, progress=prog, banner=banner)
        console.print(f"done in {time.perf_counter() - t0:.1f} s; {int(df['final'].sum()) if not df.empty else 0} final records in {out}/records")
        res = summarize(out, figures=not no_figures)
        _print_tables(res, _out_console(wide))
        if not no_figures:
            console.print(f"figures: {out}/sweep.png, {out}/classes.png; report: {out}/report.html")


def own_model_and_data(data: dict, model_file: Optional[str], data_file: Optional[str], model_given: bool = False) -> dict:
    """``--model-file FILE.py:FUNCTION`` and ``--data FILE.npz`` written into a spec dict (shared by
    every command whose spec has the data and model fields).

    **Arguments:**

    - ``data``: the spec dict so far.
    - ``model_file``: ``FILE.py:FUNCTION`` or ``None``.
    - ``data_file``: an ``.npz`` file or ``None``.
    - ``model_given``: ``--model`` was given too (refused with ``--model-file``).

    **Returns:** the updated dict (``model = "file"``, ``model_file``; ``dataset = "npz"``,
    ``data_options = {path, sha256}``: a resumed run refuses a changed file).
    """
    data = dict(data)
    if model_file is not None:
        if model_given:
            raise SpecError("model: --model and --model-file both given; keep one")
        data.update(model="file", model_file=model_file, model_file_hash=None)
    if data_file is not None:
        from phaseprobe.data.arrays import file_sha256

        p = Path(data_file).expanduser().resolve()
        if not p.is_file():
            what = "is a folder, not a file" if p.is_dir() else "does not exist"
            raise SpecError(f"data: {p} {what}; give an .npz file with x_train, y_train, x_test, y_test")
        if data.get("data_dir") is not None:
            raise SpecError("data: --data FILE.npz and --data-dir both given; keep one")
        data.update(dataset="npz", data_options={"path": str(p), "sha256": file_sha256(p)})
    return data


def check_model_file_resume(out: Path, spec: dict) -> None:
    """A rerun into ``out`` with a changed model or data file: one line saying which file changed."""
    import json

    try:
        old = json.loads((Path(out) / "spec.json").read_text()).get("spec", {})
    except (OSError, ValueError):
        return
    if old.get("model_file") and old.get("model_file") == spec.get("model_file") \
            and old.get("model_file_hash") != spec.get("model_file_hash"):
        raise SpecError(f"model_file: {old['model_file']} changed since the run in {out} began (content hash "
                        f"{old.get('model_file_hash')}, now {spec.get('model_file_hash')}); restore it, or pass a new --out")
    o, n = old.get("data_options") or {}, spec.get("data_options") or {}
    if old.get("dataset") == "npz" and o.get("path") == n.get("path") and o.get("sha256") != n.get("sha256"):
        raise SpecError(f"data: {o.get('path')} changed since the run in {out} began (content hash {o.get('sha256')}, "
                        f"now {n.get('sha256')}); restore it, or pass a new --out")


def reporter(out: Path):
    """The progress reporter of a command writing into ``out`` (bars in a terminal, log lines
    every 10 s otherwise; every line also in ``out/progress.log``)."""
    from phaseprobe.progress import ProgressReporter

    return ProgressReporter(log_path=Path(out) / "progress.log")


def _run_grid_command(data: dict, grid_fields: dict, out: Path, eng, no_figures: bool, wide: bool = False) -> None:
    """``--grid``: one sweep per cell under OUT/cells/, one report with a facet per cell."""
    from phaseprobe.engine.grid import expand, run_grid, summarize_grid

    n_cells = len(expand(grid_fields))
    banner = (f"[bold]phaseprobe sweep[/bold] grid of {n_cells} cells ("
              + ", ".join(f"{k}={','.join(map(str, v))}" for k, v in grid_fields.items()) + f"), engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with reporter(out) as prog:
        df = run_grid(data, grid_fields, out, engine=eng, progress=prog, banner=banner)
    console.print(f"done in {time.perf_counter() - t0:.1f} s; {int(df['final'].sum()) if not df.empty else 0} final records "
                  f"in {out}/cells/*/records")
    res = summarize_grid(out, figures=not no_figures)
    print_cells(_out_console(wide), res["cells"])
    if not no_figures:
        console.print(f"report: {out}/report.html (one section per cell); cells: {out}/cells.csv")


def print_cells(con: Console, cells) -> None:
    """A grid's cells table, fitted to the console (the grid's fields first; the rest dropped from
    the right when too wide, named below the table)."""
    from phaseprobe.plots.tables import frame_columns, print_fitted

    cols = frame_columns(cells, priority_from=1)
    counts = {"records", "trainings", "n_records", "converged", "diverged", "not_run", "seeds", "n_seeds"}
    for c in cols:
        if c.key in counts:
            c.fmt = (lambda k: (lambda r: _count(r.get(k))))(c.key)
    print_fitted(con, cells, cols, title="cells")


def _count(v) -> str:
    from phaseprobe.plots.tables import fmt_count

    try:
        return fmt_count(v)
    except (TypeError, ValueError):
        return str(v)


def _out_console(wide: bool = False) -> Console:
    from phaseprobe.plots.tables import table_console

    return table_console(wide)


def _strength_name(res) -> str:
    """``alpha`` or ``beta``: the name of the strength in the run's convention."""
    df = res.get("records")
    conv = str(df["convention"].iloc[0]) if df is not None and len(df) and "convention" in df.columns else "l2"
    return "alpha" if conv == "l2" else "beta"


# the analysis measures ||w||^2's jump and levels on log10 ||w||^2: the label says so
OBSERVABLES = {"test_acc": "test acc", "train_acc": "train acc", "w_sq": "log10 ||w||^2", "train_error": "train error"}


def transition_columns(s: str) -> list:
    """The transitions table's columns (``s``: the strength's name, alpha or beta), most
    important first in priority; ``--wide`` shows all of them. The bracket is the bisection
    bracket when the run refined the transition, else the grid cell widened by the seed bootstrap."""
    from phaseprobe.plots.intervals import interval
    from phaseprobe.plots.tables import Col, fmt_bracket, fmt_fraction, fmt_num

    return [
        Col("observable", "observable", fmt=lambda r: OBSERVABLES.get(r.get("observable"), str(r.get("observable"))),
            justify="left"),
        Col("branch", "branch", justify="left"),
        Col("strength_c", f"{s}_c [bracket]", fmt=lambda r: fmt_bracket(r.get("strength_c"), *interval(r)[:2])),
        Col("order", "order", justify="left"),
        Col("bracket_width", "bracket width", priority=1),
        Col("refined_steps", "refined", fmt=lambda r: _count(r.get("refined_steps")), priority=3),
        Col("seeds_agree", "seeds agree", fmt=lambda r: fmt_fraction(r.get("seeds_agree"), r.get("n_seeds")), priority=1),
        Col("jump", "jump", priority=2),
        Col("detect_fraction", "bootstrap detects",
            fmt=lambda r: "—" if fmt_num(r.get("detect_fraction")) == "—" else f"{100 * float(r['detect_fraction']):.0f}%",
            priority=3),
        Col("spinodal_up_strength", f"spinodal up ({s})", missing="not reached", priority=4),
        Col("spinodal_down_strength", f"spinodal down ({s})", missing="not reached", priority=4),
        Col("maxwell_strength", f"Maxwell ({s})", missing="not found", priority=4),
        Col("order_seeds", "order per seed", justify="left", priority=5),
        Col("hysteresis_area", "loop area", priority=6),
        Col("diverged", "diverged", fmt=lambda r: _count(r.get("diverged")), priority=6),
    ]


def plateau_columns(s: str) -> list:
    """The plateaus table's columns (``s``: the strength's name)."""
    from phaseprobe.plots.tables import Col, fmt_num

    return [
        Col("branch", "branch", justify="left"),
        Col("strength_from", f"{s} from..to",
            fmt=lambda r: f"{fmt_num(r.get('strength_from'))}..{fmt_num(r.get('strength_to'))}"),
        Col("level", "test acc", digits=3),
        Col("n_classes_learned", "classes learned (count)", fmt=lambda r: str(r.get("n_classes_learned", "—"))),
        Col("classes", "classes", justify="left", priority=1, fmt=lambda r: str(r.get("classes") or "none")),
        Col("diverged", "diverged", fmt=lambda r: _count(r.get("diverged")), priority=2),
    ]


def _print_tables(res, con: Console | None = None) -> None:
    """The run's convergence counts and notes, then its transitions and plateaus, fitted to the
    console's width (80 columns unless the terminal says otherwise; ``--wide``: everything)."""
    from phaseprobe.plots.tables import print_fitted
    from phaseprobe.sweep.summary import convergence_line

    con = con or _out_console()
    if res.get("counts"):
        con.print(convergence_line(res["counts"]))
    for n in res.get("notes", []):
        con.print(f"note: {n}")
    s = _strength_name(res)
    tr = res["transitions"]
    if len(tr):
        print_fitted(con, tr, transition_columns(s),
                     title=f"transitions ({s}_c at the seed mean's largest step; bracket = bisection bracket "
                           "when refined, else the grid cell widened by a bootstrap over seeds; seeds agree = jumps "
                           "within one grid step)")
    else:
        con.print("transitions: none found")
    pl = res["plateaus"]
    if len(pl):
        print_fitted(con, pl, plateau_columns(s),
                     title="accuracy plateaus (classes learned: recall and precision >= threshold; a range over "
                           "records, never a mean)")
