"""The public Python API: every exported name documented, and the Python defaults equal the CLI's."""

from __future__ import annotations

import inspect
import io
import subprocess
import sys

import numpy as np
import pytest

import phaseprobe
from phaseprobe.errors import PhaseprobeError


def _takes_arguments(obj) -> bool:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in sig.parameters.values())


@pytest.mark.parametrize("name", phaseprobe.__all__)
def test_every_exported_name_imports_and_is_documented(name):
    obj = getattr(phaseprobe, name)
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"phaseprobe.{name} has no docstring"
    if _takes_arguments(obj):
        assert "**Arguments:**" in doc, f"phaseprobe.{name} takes arguments but its docstring has no **Arguments:**"
    if inspect.isfunction(obj):
        assert "**Returns:**" in doc, f"phaseprobe.{name} has no **Returns:** section"


def test_exports_are_unique_and_cover_the_concepts():
    assert len(set(phaseprobe.__all__)) == len(phaseprobe.__all__)
    for name in ("open_run", "find_transitions", "summarize", "hvp", "lanczos", "slq_density", "hutchinson",
                 "scalar_curvature", "saddle_index", "from_torch", "to_torch", "alpha_sweep", "connect_minima",
                 "sweep_curvature", "spec_for"):
        assert name in phaseprobe.__all__
    assert set(phaseprobe.__all__) <= set(dir(phaseprobe))
    with pytest.raises(AttributeError):
        phaseprobe.no_such_name  # noqa: B018


def test_import_phaseprobe_does_not_start_jax():
    code = "import sys, phaseprobe; phaseprobe.open_run; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("command", ["sweep", "connect", "basins"])
def test_python_defaults_equal_the_cli_default_field_by_field(command):
    """``spec_for(command)`` is the spec the command builds with no flags (its embedded default)."""
    from phaseprobe.commands.basins import DEFAULT_BASINS
    from phaseprobe.commands.connect import DEFAULT_CONNECT, build_spec
    from phaseprobe.sweep.spec import DEFAULT_SPEC, make_spec

    py = phaseprobe.spec_for(command).model_dump()
    if command == "sweep":
        cli = make_spec(dict(DEFAULT_SPEC)).model_dump()
    else:
        default = DEFAULT_CONNECT if command == "connect" else DEFAULT_BASINS
        cli = build_spec(command, default, None, [], {})[1].model_dump()
    assert py.keys() == cli.keys()
    for field in cli:
        assert py[field] == cli[field], f"{command}.{field}: Python {py[field]!r} != CLI {cli[field]!r}"


def test_sweep_default_differs_from_the_bare_class_and_the_entry_point_uses_the_cli_one():
    from phaseprobe.sweep.spec import DEFAULT_SPEC, SweepSpec

    bare, py = SweepSpec().model_dump(), phaseprobe.spec_for("sweep").model_dump()
    differs = sorted(k for k in bare if bare[k] != py[k])
    assert differs  # the class keeps older defaults (stored hashes depend on them) ...
    for k in differs:  # ... and every difference is a field the command's default sets
        assert k in DEFAULT_SPEC, k
    assert inspect.signature(phaseprobe.alpha_sweep).parameters["spec"].default is None


def test_spec_for_fields_and_flags_agree():
    """A field set from Python is the spec the CLI builds from the same flag."""
    from phaseprobe.commands.sweep import own_model_and_data  # noqa: F401 (the CLI's own helper)
    from phaseprobe.sweep.spec import DEFAULT_SPEC, make_spec

    py = phaseprobe.spec_for("sweep", lr=0.01, epochs=50, alphas="1e-3:1e-1:5", mode="cold", seeds=2)
    cli = make_spec({**DEFAULT_SPEC, "lr": 0.01, "epochs": 50, "alphas": "1e-3:1e-1:5", "mode": "cold", "seeds": 2})
    assert py.model_dump() == cli.model_dump() and py.hash() == cli.hash()


def test_spec_for_bad_input_is_one_line():
    with pytest.raises(PhaseprobeError) as e:
        phaseprobe.spec_for("sweep", widht=3)
    assert "\n" not in str(e.value) and "widht" in str(e.value)
    with pytest.raises(PhaseprobeError, match="command: unknown"):
        phaseprobe.spec_for("sweeps")
    with pytest.raises(PhaseprobeError, match="data:"):
        phaseprobe.spec_for("sweep", data="/no/such/file.npz")


def test_curvature_defaults_equal_the_cli_options():
    import typer

    from phaseprobe.cli import app

    cmd = typer.main.get_command(app).commands["curvature"]
    cli = {p.name: p.default for p in cmd.params}
    py = inspect.signature(phaseprobe.sweep_curvature).parameters
    for cli_name, py_name in (("probes", "n_probes"), ("k", "k"), ("exact", "exact"), ("max_params", "max_params")):
        assert py[py_name].default == cli[cli_name], (cli_name, cli[cli_name], py[py_name].default)


def test_progress_default_follows_the_terminal(tmp_path, monkeypatch):
    from phaseprobe.api import progress_for

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_for(None, tmp_path) as rep:  # not a terminal, not a notebook: silent, logged
        rep.phase("work", 2).advance(2)
        assert rep.stream is not sys.stderr
    assert sys.stderr.getvalue() == ""
    assert "[work] 0/2" in (tmp_path / "progress.log").read_text()
    with progress_for(True, tmp_path) as rep:  # asked for: plain lines on stderr
        rep.phase("more", 1).advance(1)
    assert "[more]" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", Tty())
    with progress_for(None, tmp_path) as rep:  # a terminal: bars
        assert rep.terminal
    own = phaseprobe.ProgressReporter(stream=io.StringIO(), terminal=False)
    with progress_for(own, tmp_path) as rep:
        assert rep is own
    own.close()


def test_geometry_from_the_top_level_on_a_users_equinox_model():
    """Lanczos, the exact Hessian, Hutchinson, R and the saddle index through ``phaseprobe.*``."""
    import equinox as eqx
    import jax

    key = jax.random.PRNGKey(0)
    model = eqx.nn.MLP(3, 2, width_size=4, depth=1, activation=jax.nn.tanh, key=key)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (20, 3)))
    y = np.arange(20) % 2
    E = phaseprobe.make_error_fn(model, (x, y))
    L = phaseprobe.make_loss_fn(model, (x, y), alpha=0.01)
    params = eqx.filter(model, eqx.is_inexact_array)
    H = phaseprobe.exact_hessian(E, params)
    lam = np.linalg.eigvalsh(H.astype(np.float64))
    res = phaseprobe.lanczos(E, params, k=1, num_iter=H.shape[0])
    assert abs(res.largest[0] - lam[-1]) < 1e-4 * max(1.0, abs(lam[-1]))
    assert abs(res.smallest[0] - lam[0]) < 1e-4 * max(1.0, abs(lam[-1]))
    tr = phaseprobe.hutchinson(E, params, n_probes=16, key=0)
    assert abs(tr.tr_H - np.trace(H)) < 6 * tr.tr_H_se + 1e-6
    R = phaseprobe.scalar_curvature(E, params, exact=True)
    assert np.isfinite(R.R)
    idx = phaseprobe.saddle_index(L, params, exact=True)
    HL = H + 2 * 0.01 * np.eye(H.shape[0])
    assert idx.index == int(np.sum(np.linalg.eigvalsh(HL) < -idx.tol))
    v = jax.tree_util.tree_map(np.ones_like, params)
    Hv = phaseprobe.hvp(E, params, v)
    flat = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(Hv)])
    np.testing.assert_allclose(flat, H @ np.ones(H.shape[0]), rtol=1e-3, atol=1e-5)
    dens = phaseprobe.slq_density(E, params, n_probes=2, num_iter=8, key=0)
    assert abs(dens.integral() - 1.0) < 0.05


def test_alpha_sweep_runs_a_users_model_file_on_npz_arrays(tmp_path, capfd):
    """The Python entry point end to end on a tiny cold sweep: the run folder, its analysis, its
    stored model, silence with ``progress=False`` (the log still written), and the same spec hash
    as the CLI builds from the same flags."""
    from phaseprobe.commands.sweep import own_model_and_data
    from phaseprobe.sweep.spec import DEFAULT_SPEC, fit_default_batch, make_spec

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = tmp_path / "arrays.npz"
    np.savez(data, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    model_file = tmp_path / "net.py"
    model_file.write_text("import equinox as eqx\nimport jax\n\n\ndef make(key, in_dim, out_dim):\n"
                          "    return eqx.nn.MLP(in_dim, out_dim, width_size=4, depth=1, activation=jax.nn.tanh, key=key)\n")
    fields = dict(alphas="1e-3,1e-1", seeds=1, epochs=5, mode="cold")
    run = phaseprobe.alpha_sweep(tmp_path / "run", model_file=f"{model_file}:make", data=data, progress=False,
                                 figures=False, **fields)
    captured = capfd.readouterr()
    assert "[trainings]" not in captured.err and "[trainings]" not in captured.out
    assert "[trainings] 2/2" in (tmp_path / "run" / "progress.log").read_text()
    assert run.kind == "sweep" and int(run.records["final"].sum()) == 2
    assert "transitions" in run.tables and "plateaus" in run.tables
    model = run.model(branch="cold", alpha_index=1, seed=0)
    assert np.asarray(model(x[0])).shape == (2,)
    cli = make_spec(fit_default_batch(own_model_and_data({**DEFAULT_SPEC, **fields}, f"{model_file}:make", str(data)))[0])
    assert run.meta["spec_hash"] == cli.hash()
