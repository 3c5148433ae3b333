"""The Python entry points: the commands that train, called with a model file and arrays.

Each function runs the same pipeline as its command (``phaseprobe sweep``, ``connect``,
``basins``, ``curvature``), from the same embedded defaults, into a run folder that resumes,
refuses a second writer and keeps its progress log; then it analyses the folder like the
command does and returns it as a :class:`phaseprobe.runs.Run`.

::

    import phaseprobe
    run = phaseprobe.alpha_sweep("runs/mine", model_file="my_net.py:make_model", data="my_arrays.npz",
                                 alphas="1e-3:0.3:12", epochs=200)
    run.tables["transitions"]                 # what `phaseprobe show runs/mine` prints
    geo = phaseprobe.sweep_curvature(run)     # scalar curvature and saddle index at every minimum

Progress (``progress=``): ``None`` (default) shows it when stderr is a terminal (bars) or the
code runs in a Jupyter notebook (a log line every few seconds); ``True`` always, ``False``
never (the run folder's ``progress.log`` gets every line either way), or a
:class:`~phaseprobe.progress.ProgressReporter` of one's own.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from phaseprobe.errors import SpecError

COMMANDS_WITH_SPECS: tuple[str, ...] = ("sweep", "connect", "basins")
NOTEBOOK_EVERY_S = 5.0
"""Seconds between progress lines in a notebook (a terminal gets live bars instead)."""


def command_default(command: str) -> dict:
    """The embedded default spec of a command (what it runs with no flags), as a dict.

    **Arguments:**

    - `command`: ``"sweep"``, ``"connect"`` or ``"basins"``.

    **Returns:** a fresh copy of the command's default spec dict.
    """
    if command == "sweep":
        from phaseprobe.sweep.spec import DEFAULT_SPEC

        return dict(DEFAULT_SPEC)
    if command == "connect":
        from phaseprobe.commands.connect import DEFAULT_CONNECT

        return dict(DEFAULT_CONNECT)
    if command == "basins":
        from phaseprobe.commands.basins import DEFAULT_BASINS

        return dict(DEFAULT_BASINS)
    raise SpecError(f"command: unknown '{command}'; use one of {', '.join(COMMANDS_WITH_SPECS)}")


def spec_for(command: str = "sweep", spec: Union[None, str, Path, dict] = None, *, model_file: Optional[str] = None,
             data: Union[None, str, Path] = None, **fields: Any):
    """The checked spec a command would run, built the way the command builds it.

    Start from the command's embedded default (``spec=None``; exactly what the command runs with
    no flags), or from a TOML spec file or a dict; then a model file and an ``.npz`` file (as
    ``--model-file`` and ``--data`` do); then ``fields`` (spec field names, as ``--set`` takes).
    Note that ``SweepSpec()`` itself keeps its class defaults (kept so that stored spec hashes
    stay valid); use this function for the command's defaults.

    **Arguments:**

    - `command`: ``"sweep"``, ``"connect"`` or ``"basins"``.
    - `spec`: ``None`` (the command's default), a TOML spec file, or a spec dict.
    - `model_file`: ``"FILE.py:FUNCTION"``; ``FUNCTION(key, in_dim, out_dim)`` returns an Equinox
      module or an ``(init(key) -> params, apply(params, x) -> outputs)`` pair.
    - `data`: an ``.npz`` file with ``x_train (n, ...)``, ``y_train (n,)``, ``x_test (m, ...)``,
      ``y_test (m,)`` (optional ``class_names (K,)``).
    - `fields`: spec fields to set, e.g. ``alphas="1e-3:0.3:12"``, ``epochs=200``, ``seeds=2``.

    **Returns:** a :class:`~phaseprobe.sweep.spec.SweepSpec` (sweep) or a
    :class:`~phaseprobe.paths.workflow.PathSpec` (connect, basins); bad input raises a one-line
    :class:`~phaseprobe.errors.PhaseprobeError` before any compute.
    """
    from phaseprobe.commands.sweep import own_model_and_data

    base = command_default(command)
    if spec is None:
        d = base
    elif isinstance(spec, dict):
        d = dict(spec)
    elif isinstance(spec, (str, Path)):
        if command == "sweep":
            from phaseprobe.sweep.spec import load_spec_file

            d = load_spec_file(spec)
        else:
            from phaseprobe.paths.workflow import load_path_spec_file

            d = load_path_spec_file(spec, command)
    else:
        raise SpecError(f"spec: got a {type(spec).__name__}; give None (the command's default), a TOML file or a dict")
    d.update(fields)
    if model_file is not None or data is not None:
        d = own_model_and_data(d, model_file, None if data is None else str(data),
                               model_given=model_file is not None and "model" in fields)
    if command == "sweep":
        from phaseprobe.sweep.spec import fit_default_batch, make_spec

        if spec is None and "batch_size" not in fields:
            d, _ = fit_default_batch(d)

        return make_spec(d)
    from phaseprobe.paths.workflow import make_path_spec

    return make_path_spec(d, command)


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (IPython's ZMQ shell).

    **Returns:** ``True`` inside a notebook, else ``False``.
    """
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


@contextmanager
def progress_for(progress, out: Union[str, Path]) -> Iterator[Any]:
    """The progress reporter of a Python entry point writing into ``out``.

    **Arguments:**

    - `progress`: ``None`` (on in a terminal or a notebook), ``True``, ``False``, or a
      :class:`~phaseprobe.progress.ProgressReporter` (used as is, not closed).
    - `out`: the run folder; every line also goes to ``out/progress.log``.

    **Returns:** a context manager yielding the reporter.
    """
    from phaseprobe.progress import ProgressReporter

    if progress is not None and not isinstance(progress, bool):
        yield progress
        return
    terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
    notebook = in_notebook()
    show = (terminal or notebook) if progress is None else progress
    log = Path(out) / "progress.log"
    if show:
        rep = ProgressReporter(log_path=log, terminal=terminal and not notebook,
                               every=NOTEBOOK_EVERY_S if notebook else 10.0)
        sink = None
    else:
        sink = open(os.devnull, "w")
        rep = ProgressReporter(stream=sink, log_path=log, terminal=False)
    try:
        yield rep
    finally:
        rep.close()
        if sink is not None:
            sink.close()


def _engine(engine):
    from phaseprobe.engine import get_engine

    if engine is None or isinstance(engine, str):
        return get_engine(engine or "local")
    return engine


def _with_fields(spec, command: str, fields: dict, model_file, data):
    """A spec object used as is, or built by :func:`spec_for` (fields on a spec object: re-checked)."""
    from phaseprobe.paths.workflow import PathSpec
    from phaseprobe.sweep.spec import SweepSpec

    if isinstance(spec, (SweepSpec, PathSpec)):
        if not fields and model_file is None and data is None:
            return spec
        spec = spec.model_dump()
    return spec_for(command, spec, model_file=model_file, data=data, **fields)


def alpha_sweep(out: Union[str, Path], spec=None, *, model_file: Optional[str] = None, data: Union[None, str, Path] = None,
                engine=None, progress=None, figures: bool = True, **fields: Any):
    """Run (or resume) an L2-strength sweep into ``out`` and analyse it: ``phaseprobe sweep``.

    Trains one ensemble per unit (every seed, and every strength of a cold sweep, in one
    compiled program), warm-starts chains in ``up``/``down``/``loop`` mode, stores every piece,
    then finds the transitions and plateaus (``transitions.csv``, ``plateaus.csv``), draws
    ``sweep.png``/``classes.png`` and writes ``report.html``. Rerun with the same arguments to
    resume: what is stored is skipped.

    **Arguments:**

    - `out`: the run folder.
    - `spec`: ``None`` (the command's embedded default), a TOML file, a dict, or a
      :class:`~phaseprobe.sweep.spec.SweepSpec`.
    - `model_file`, `data`: a model file ``"FILE.py:FUNCTION"`` and an ``.npz`` file (see
      :func:`spec_for`).
    - `engine`: ``"local"`` (default), ``"ray"`` or an engine object.
    - `progress`: ``None`` (on in a terminal or notebook), ``True``, ``False`` or a reporter.
    - `figures`: write the figures and the report.
    - `fields`: spec fields, e.g. ``alphas="1e-3:0.3:12"``, ``mode="loop"``, ``epochs=200``.

    **Returns:** the run folder as a :class:`~phaseprobe.runs.Run` (``.records``,
    ``.tables["transitions"]``, ``.tables["plateaus"]``, ``.model(branch=, alpha_index=, seed=)``).
    """
    from phaseprobe.commands.sweep import check_model_file_resume
    from phaseprobe.runs import open_run
    from phaseprobe.sweep.driver import run_sweep
    from phaseprobe.sweep.summary import summarize

    s = _with_fields(spec, "sweep", fields, model_file, data)
    check_model_file_resume(Path(out), s.model_dump())
    eng = _engine(engine)
    model = Path(s.model_file).name if s.model_file else f"{s.model} depth {s.depth} width {s.width}"
    banner = (f"sweep {s.name}: {s.dataset}, model {model}, mode {s.mode}, {len(s.alpha_grid())} strengths x "
              f"{len(s.seed_list())} seeds -> {out}")
    t0 = time.perf_counter()
    with progress_for(progress, out) as prog:
        run_sweep(s, out, engine=eng, progress=prog, banner=banner)
        prog.message(f"trained in {time.perf_counter() - t0:.1f} s; analysing")
        summarize(out, figures=figures)
    return open_run(out)


def _paths(command: str, out, spec, model_file, data, engine, progress, figures, fields):
    from phaseprobe.experiment import get_kind, run_experiment
    from phaseprobe.runs import open_run

    s = _with_fields(spec, command, fields, model_file, data)
    kind = get_kind(command)
    with progress_for(progress, out) as prog:
        run_experiment(kind, s, out, engine=_engine(engine), progress=prog, banner=f"{command} {s.name} -> {out}")
        prog.message("analysing: dense path evaluation, tables" + (", figures, report" if figures else ""))
        kind.analyse(out, figures=figures)
    return open_run(out)


def connect_minima(out: Union[str, Path], spec=None, *, model_file: Optional[str] = None, data: Union[None, str, Path] = None,
                   engine=None, progress=None, figures: bool = True, **fields: Any):
    """Connect minima with the L2 probe and compare it with linear and Bezier paths: ``phaseprobe connect``.

    Trains fresh minima (or takes them from sweep folders, ``run=[DIR]``), runs the probe from
    each minimum toward the other (``w_ref`` = the other minimum, strength raised with warm
    starts), bisects its jumps, refines a saddle at each, and evaluates the probe, the straight
    line and a trained Bezier curve densely (``paths_summary.csv``, ``transitions.csv``,
    ``paths.png``, ``probe.png``).

    **Arguments:**

    - `out`: the run folder.
    - `spec`: ``None`` (the command's embedded default), a TOML file, a dict or a
      :class:`~phaseprobe.paths.workflow.PathSpec`.
    - `model_file`, `data`, `engine`, `progress`, `figures`: as in :func:`alpha_sweep`.
    - `fields`: spec fields, e.g. ``n_strengths=8``, ``bezier_epochs=20``, ``seeds=2``.

    **Returns:** the run folder as a :class:`~phaseprobe.runs.Run` (``.tables["paths_summary"]``,
    ``.tables["transitions"]``, ``.records``).
    """
    return _paths("connect", out, spec, model_file, data, engine, progress, figures, fields)


def basin_hierarchy(out: Union[str, Path], spec=None, *, model_file: Optional[str] = None, data: Union[None, str, Path] = None,
                    engine=None, progress=None, figures: bool = True, **fields: Any):
    """The hierarchy of accuracy basins: probes toward ``w_ref = 0``, then nested probes: ``phaseprobe basins``.

    **Arguments:**

    - `out`: the run folder.
    - `spec`: ``None`` (the command's embedded default), a TOML file, a dict or a
      :class:`~phaseprobe.paths.workflow.PathSpec`.
    - `model_file`, `data`, `engine`, `progress`, `figures`: as in :func:`alpha_sweep`.
    - `fields`: spec fields, e.g. ``strengths="lin:0:0.03:16"``, ``max_nest=2``.

    **Returns:** the run folder as a :class:`~phaseprobe.runs.Run` (``.tables["basin_nodes"]``
    and the other tables the analysis writes).
    """
    return _paths("basins", out, spec, model_file, data, engine, progress, figures, fields)


def sweep_curvature(run, *, exact: Optional[bool] = None, n_probes: int = 32, k: int = 2,
                    branches: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
                    max_params: Optional[int] = None, model_file: Optional[str] = None,
                    data: Union[None, str, Path] = None, progress=None, figures: bool = True):
    """Curvature, Hessian extremes and saddle index at every stored minimum of a sweep: ``phaseprobe curvature``.

    For each (branch, strength, seed) minimum: the scalar curvature of the error surface
    ``R(E)`` and of the loss surface ``R(L_alpha)`` (``E`` the mean over the training set), the
    extreme eigenvalues of ``H_E`` and ``H_L``, and the saddle index of ``L_alpha`` (exact
    Hessian for small models, Lanczos and Hutchinson otherwise). Writes ``curvature.parquet``,
    the change points of ``R`` along the strength matched to the sweep's transitions
    (``curvature_change_points.csv``, ``curvature_matches.csv``), ``curvature.png`` and a report
    section. Resumable: pieces are kept under ``RUN/curvature/<options>/``.

    **Arguments:**

    - `run`: a sweep run folder or its :class:`~phaseprobe.runs.Run`.
    - `exact`: dense Hessian (``True``), HVP estimators (``False``), or by size (``None``).
    - `n_probes`: Hutchinson probes (stochastic mode).
    - `k`: Lanczos eigenvalues at each end of the spectrum.
    - `branches`, `seeds`: only these branches (``cold``, ``up``, ``down``) / seeds.
    - `max_params`: largest model for the exact Hessian (default 5000).
    - `model_file`, `data`: where the run's own model and ``.npz`` files are now, if they moved.
    - `progress`: as in :func:`alpha_sweep`.
    - `figures`: write ``curvature.png`` and the report section.

    **Returns:** a pandas DataFrame, one row per minimum (``branch, alpha, strength, seed,
    R_E, R_L, lambda_min_E, lambda_max_E, saddle_index_L, saddle_index_L_label``, ...).
    """
    from phaseprobe.geometry.run_curvature import curvature_of_run, curvature_report
    from phaseprobe.store import save_frame_parquet

    run_dir = Path(getattr(run, "path", run))
    with progress_for(progress, run_dir) as prog:
        state: dict = {}

        def on_plan(n):
            state["task"] = prog.phase("minima analysed", n, unit="minima")

        geo = curvature_of_run(run_dir, exact=exact, n_probes=n_probes, lanczos_k=k, branches=branches, seeds=seeds,
                               max_params=max_params, model_file=model_file,
                               data_file=None if data is None else str(data),
                               on_plan=on_plan, on_point=lambda n: state["task"].advance(n))
        if "task" in state:
            state["task"].finish()
    save_frame_parquet(geo, run_dir / "curvature.parquet")
    curvature_report(run_dir, geo, figure=figures)
    return geo
