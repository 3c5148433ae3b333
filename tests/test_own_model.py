"""A researcher's own model (``--model-file FILE.py:FUNCTION``) on their own arrays (``--data FILE.npz``):
an ``eqx.nn.MLP`` factory and an ``(init, apply)`` pair through ``sweep`` (CLI and ``run_sweep``),
``curvature`` and ``open_run(...).model``; resume refusing a changed file; every bad model file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import phaseprobe
from phaseprobe.errors import PhaseprobeError
from phaseprobe.models.user import FunctionalModel, OwnModule, build_user_model, model_file_hash
from phaseprobe.sweep.spec import DEFAULT_SPEC, fit_default_batch, make_spec

MLP_FILE = """import equinox as eqx
import jax

def make(key, in_dim, out_dim):
    return eqx.nn.MLP(in_dim, out_dim, width_size=6, depth=1, activation=jax.nn.tanh, key=key)
"""

PAIR_FILE = """import jax
import jax.numpy as jnp

def make(key, in_dim, out_dim):
    def init(k):
        k1, k2 = jax.random.split(k)
        return {"w1": jax.random.normal(k1, (in_dim, 6)) / jnp.sqrt(in_dim), "b1": jnp.zeros(6),
                "w2": jax.random.normal(k2, (6, out_dim)) / jnp.sqrt(6.0)}

    def apply(params, x):
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]

    return init, apply
"""

FORMS = {"mlp": (MLP_FILE, OwnModule), "pair": (PAIR_FILE, FunctionalModel)}
BASE = {k: v for k, v in DEFAULT_SPEC.items() if k != "model"}  # the CLI's defaults; model = "file" comes with model_file
SWEEP_ARGS = ["--alphas", "1e-3,0.3", "--seeds", "2", "--epochs", "15", "--mode", "cold", "--no-figures"]


def _cli(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _npz(path: Path) -> Path:
    r = np.random.default_rng(0)
    x_tr = r.normal(size=(48, 5)).astype(np.float32)
    x_te = r.normal(size=(24, 5)).astype(np.float32)
    label = lambda x: (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)  # noqa: E731
    np.savez(path, x_train=x_tr, y_train=label(x_tr), x_test=x_te, y_test=label(x_te),
             class_names=np.array(["low", "mid", "high"]))
    return path


def _accuracy(model, x, y) -> float:
    pred = np.asarray(jnp.argmax(jax.vmap(model)(jnp.asarray(x)), axis=-1))
    return float(np.mean(pred == y))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_own_model_through_sweep_curvature_and_open_run(tmp_path, form):
    text, wrapper = FORMS[form]
    (tmp_path / "net.py").write_text(text)
    data = _npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    r = _cli("sweep", "--model-file", "net.py:make", "--data", "d.npz", *SWEEP_ARGS, "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert spec["model"] == "file"
    assert spec["model_file"] == f"{tmp_path / 'net.py'}:make"  # absolute: later commands find it from anywhere
    assert spec["model_file_hash"] == model_file_hash(spec["model_file"])
    assert spec["dataset"] == "npz" and spec["data_options"]["path"] == str(data)

    run = phaseprobe.open_run(out)
    rec = run.records
    assert len(rec) == 4 and rec["final"].all()
    z = np.load(data)
    for row in rec.itertuples():
        model = run.model(seed=int(row.seed), alpha_index=int(row.alpha_index), branch="cold")
        assert isinstance(model, wrapper)
        # the stored parameters give back the recorded accuracy of that member
        assert _accuracy(model, z["x_test"], z["y_test"]) == pytest.approx(row.test_acc, abs=1e-6)  # float32 record; one example is 1/24

    c = _cli("curvature", str(out), "--exact", cwd="/")  # another folder: the spec's absolute path finds the file
    assert c.returncode == 0, c.stderr
    geo = run.curvature
    assert geo is not None and len(geo) == 4 and np.isfinite(geo["R_E"]).all()


def test_run_sweep_from_python_matches_the_cli(tmp_path):
    from phaseprobe.sweep.driver import run_sweep

    (tmp_path / "net.py").write_text(PAIR_FILE)
    data = _npz(tmp_path / "d.npz")
    cli_out, py_out = tmp_path / "cli", tmp_path / "py"
    r = _cli("sweep", "--model-file", "net.py:make", "--data", "d.npz", *SWEEP_ARGS, "--out", str(cli_out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from phaseprobe.data.arrays import file_sha256

    # as the command builds it: the default's minibatch falls back to full batch on this small set
    spec = make_spec(fit_default_batch(dict(BASE, model_file=f"{tmp_path / 'net.py'}:make", dataset="npz",
                                            data_options={"path": str(data), "sha256": file_sha256(data)},
                                            alphas="1e-3,0.3", seeds=2, epochs=15, mode="cold"))[0])
    assert spec.model == "file" and spec.model_file_hash == model_file_hash(str(tmp_path / "net.py:make"))
    df = run_sweep(spec, py_out)
    cli = phaseprobe.open_run(cli_out).records.drop(columns=["seconds"]).sort_values(["alpha_index", "seed"])
    py = df.drop(columns=["seconds"]).sort_values(["alpha_index", "seed"])
    assert json.loads((py_out / "spec.json").read_text())["spec_hash"] == spec.hash()
    np.testing.assert_array_equal(cli["test_acc"].to_numpy(), py["test_acc"].to_numpy())
    np.testing.assert_array_equal(cli["loss"].to_numpy(), py["loss"].to_numpy())


def test_resume_refuses_a_changed_model_file(tmp_path):
    (tmp_path / "net.py").write_text(MLP_FILE)
    _npz(tmp_path / "d.npz")
    args = ["sweep", "--model-file", "net.py:make", "--data", "d.npz", *SWEEP_ARGS, "--out", "run"]
    assert _cli(*args, cwd=tmp_path).returncode == 0
    (tmp_path / "net.py").write_text(MLP_FILE.replace("width_size=6", "width_size=7"))
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "model_file:" in err[0] and "changed since the run" in err[0] and "Traceback" not in r.stderr
    # curvature rebuilds the model from the spec: the changed file is refused there too, in one line
    c = _cli("curvature", "run", cwd=tmp_path)
    assert c.returncode == 2 and "changed since the run was made" in c.stderr and "Traceback" not in c.stderr
    (tmp_path / "net.py").write_text(MLP_FILE)  # restored: the run resumes (everything is done)
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "nothing to run" in r.stderr


def test_curvature_finds_a_moved_model_file(tmp_path):
    (tmp_path / "net.py").write_text(PAIR_FILE)
    _npz(tmp_path / "d.npz")
    assert _cli("sweep", "--model-file", "net.py:make", "--data", "d.npz", *SWEEP_ARGS, "--out", "run",
                cwd=tmp_path).returncode == 0
    (tmp_path / "moved").mkdir()
    (tmp_path / "net.py").rename(tmp_path / "moved" / "net.py")
    c = _cli("curvature", "run", "--exact", cwd=tmp_path)
    assert c.returncode == 2 and "does not exist" in c.stderr and "Traceback" not in c.stderr
    c = _cli("curvature", "run", "--exact", "--model-file", "moved/net.py:make", cwd=tmp_path)
    assert c.returncode == 0, c.stderr


BAD_FILES = {
    "syntax": ("def make(key, in_dim, out_dim)\n    return 1\n", "syntax error"),
    "no function": ("def other(key, in_dim, out_dim):\n    return None\n", "defines no function 'make'"),
    "signature": ("def make(key):\n    return None\n", "must take (key, in_dim, out_dim)"),
    "import fails": ("import not_a_module_anywhere\n", "importing"),
    "not a model": ("def make(key, in_dim, out_dim):\n    return 3\n", "returned int"),
    "raises": ("def make(key, in_dim, out_dim):\n    raise RuntimeError('boom')\n", "failed (RuntimeError: boom)"),
    "output shape": (MLP_FILE.replace("out_dim, width_size", "out_dim + 1, width_size"), "it must return float outputs of shape (3,)"),
    "wrong input": (MLP_FILE.replace("in_dim, out_dim, width", "in_dim + 2, out_dim, width"), "failed"),
    "int params": (PAIR_FILE.replace('"b1": jnp.zeros(6)', '"b1": jnp.zeros(6, dtype=jnp.int32)'), "parameters must be float arrays"),
    "int module field": ("import equinox as eqx\nimport jax.numpy as jnp\n\nclass M(eqx.Module):\n    w: object\n    n: object\n\n"
                         "    def __call__(self, x):\n        return x[:3] * self.w\n\n"
                         "def make(key, in_dim, out_dim):\n    return M(jnp.ones(3), jnp.arange(3))\n", "int32 parameter of shape (3,)"),
    "init fails": (PAIR_FILE.replace("def init(k):", "def init():"), "init must take one PRNG key"),
    "no params": ("def make(key, in_dim, out_dim):\n    return (lambda k: {}), (lambda p, x: x)\n", "without parameters"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_model_files_give_one_line(tmp_path, case):
    text, expected = BAD_FILES[case]
    f = tmp_path / "bad.py"
    f.write_text(text)
    with pytest.raises(PhaseprobeError) as err:
        build_user_model(f"{f}:make", (5,), 3, key=jax.random.PRNGKey(0))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model_file:") and str(f) in msg and expected in msg, msg


def test_missing_and_malformed_model_file_fields(tmp_path):
    with pytest.raises(PhaseprobeError, match=r"^model_file: .*does not exist"):
        make_spec(dict(BASE, model_file=str(tmp_path / "none.py:make")))
    (tmp_path / "net.py").write_text(MLP_FILE)
    with pytest.raises(PhaseprobeError, match="names no function"):
        make_spec(dict(BASE, model_file=str(tmp_path / "net.py")))
    with pytest.raises(PhaseprobeError, match=r"^model: 'mlp' and model_file both given"):
        make_spec(dict(DEFAULT_SPEC, model="mlp", model_file=str(tmp_path / "net.py:make")))
    with pytest.raises(PhaseprobeError, match=r"^model: 'file' needs model_file"):
        make_spec(dict(DEFAULT_SPEC, model="file"))
    # without a model file the spec (and so its hash) has no model-file fields
    assert "model_file" not in make_spec(dict(DEFAULT_SPEC)).model_dump()


def test_bad_model_file_on_the_cli_fails_before_training(tmp_path):
    (tmp_path / "bad.py").write_text(BAD_FILES["output shape"][0])
    _npz(tmp_path / "d.npz")
    r = _cli("sweep", "--model-file", "bad.py:make", "--data", "d.npz", *SWEEP_ARGS, "--out", "run", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: model_file:")
    assert not list((tmp_path / "run").glob("records/*.parquet"))
    r = _cli("sweep", "--model", "mlp", "--model-file", "bad.py:make", "--out", "run2", cwd=tmp_path)
    assert r.returncode == 2 and "--model and --model-file both given" in r.stderr


def test_own_model_and_data_through_connect(tmp_path):
    (tmp_path / "net.py").write_text(MLP_FILE)
    _npz(tmp_path / "d.npz")
    r = _cli("connect", "--model-file", "net.py:make", "--data", "d.npz", "--seeds", "2", "--n-strengths", "3",
             "--bezier-epochs", "3", "--set", "epochs=10", "--set", "saddle_steps=2", "--set", "batch_size=null",
             "--out", "run", "--no-figures", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = phaseprobe.open_run(tmp_path / "run")
    assert run.spec["model_file"] == f"{tmp_path / 'net.py'}:make" and run.spec["dataset"] == "npz"
    assert set(run.tables["paths_summary"]["method"]) == {"probe", "linear", "bezier"}
