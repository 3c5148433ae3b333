"""A researcher's own data: ``.npz`` arrays (``dataset = "npz"``, ``--data FILE.npz``) validated with
one-line errors, and CIFAR-10 read from ``cifar-10-batches-py`` batches the tests write themselves."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from phaseprobe.data import DataError, load_dataset
from phaseprobe.data.arrays import CIFAR10_CLASS_NAMES, file_sha256


def _arrays(n_tr=40, n_te=20, d=4, k=3, seed=0) -> dict:
    r = np.random.default_rng(seed)
    return {"x_train": r.normal(size=(n_tr, d)).astype(np.float32), "y_train": np.arange(n_tr) % k,
            "x_test": r.normal(size=(n_te, d)).astype(np.float32), "y_test": np.arange(n_te) % k}


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_classification_with_class_names(tmp_path):
    a = _arrays()
    p = _save(tmp_path / "d.npz", **a, class_names=np.array(["cat", "dog", "fox"]))
    d = load_dataset("npz", path=str(p))
    assert d.name == "npz" and d.task == "classification" and d.n_classes == 3 and d.classes == (0, 1, 2)
    assert d.meta["class_names"] == ["cat", "dog", "fox"] and d.meta["sha256"] == file_sha256(p)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    np.testing.assert_array_equal(d.x_train, a["x_train"])  # normalize "none": the arrays as saved
    np.testing.assert_array_equal(d.y_test, a["y_test"])
    sub = load_dataset("npz", path=str(p), classes=[2, 0], n_train=10, normalize="standard")
    assert sub.n_classes == 2 and sub.meta["class_names"] == ["fox", "cat"] and sub.n_train == 10
    assert set(np.unique(sub.y_train)) == {0, 1}
    assert abs(float(sub.x_train.mean())) < 0.5


def test_npz_keeps_image_shape_and_regression_targets(tmp_path):
    r = np.random.default_rng(1)
    p = _save(tmp_path / "img.npz", x_train=r.integers(0, 255, (12, 1, 4, 4)).astype(np.uint8), y_train=np.arange(12) % 2,
              x_test=r.integers(0, 255, (6, 1, 4, 4)).astype(np.uint8), y_test=np.arange(6) % 2)
    d = load_dataset("npz", path=str(p), normalize="global")
    assert d.input_shape == (1, 4, 4) and d.x_train.dtype == np.float32 and d.output_dim == 2
    q = _save(tmp_path / "reg.npz", x_train=r.normal(size=(10, 3)), y_train=r.normal(size=(10, 2)),
              x_test=r.normal(size=(5, 3)), y_test=r.normal(size=(5, 2)))
    reg = load_dataset("npz", path=str(q), n_train=4)
    assert reg.task == "regression" and reg.output_dim == 2 and reg.n_train == 4 and reg.y_train.dtype == np.float32


def _bad(tmp_path, case):
    a = _arrays()
    if case == "missing file":
        return tmp_path / "none.npz", "does not exist"
    if case == "not npz":
        (tmp_path / "t.npz").write_text("hello")
        return tmp_path / "t.npz", "not a readable .npz"
    if case == "missing key":
        a.pop("y_test")
        return _save(tmp_path / "b.npz", **a), "lacks y_test"
    if case == "nan":
        a["x_train"][3, 1] = np.nan
        return _save(tmp_path / "b.npz", **a), "x_train has 1 NaN or infinite"
    if case == "label range":
        a["y_test"][0] = 3
        return _save(tmp_path / "b.npz", **a, class_names=np.array(["a", "b", "c"])), "label 3, outside the 3 class_names"
    if case == "negative label":
        a["y_train"][0] = -1
        return _save(tmp_path / "b.npz", **a), "label -1"
    if case == "rows":
        a["y_train"] = a["y_train"][:-1]
        return _save(tmp_path / "b.npz", **a), "one label per example"
    if case == "features":
        a["x_test"] = a["x_test"][:, :3]
        return _save(tmp_path / "b.npz", **a), "the same example shape"
    if case == "strings":
        a["x_train"] = np.array([["a"] * 4] * 40)
        return _save(tmp_path / "b.npz", **a), "not numbers"
    if case == "objects":
        a["class_names"] = np.array(["a", None, "c"], dtype=object)
        return _save(tmp_path / "b.npz", **a), "Python objects"
    if case == "2-d labels":
        a["y_train"] = np.stack([a["y_train"]] * 2, 1)
        return _save(tmp_path / "b.npz", **a), "must be 1-d"
    if case == "one class":
        a["y_train"] = np.zeros(40, dtype=np.int64)
        return _save(tmp_path / "b.npz", **a), "one class only"
    if case == "mixed labels":
        a["y_test"] = a["y_test"].astype(np.float32)
        return _save(tmp_path / "b.npz", **a), "the same kind in both splits"
    if case == "flat x":
        a["x_train"] = a["x_train"][:, 0]
        return _save(tmp_path / "b.npz", **a), "give (n_examples, features...)"
    raise AssertionError(case)


BAD = ["missing file", "not npz", "missing key", "nan", "label range", "negative label", "rows", "features",
       "strings", "objects", "2-d labels", "one class", "mixed labels", "flat x"]


@pytest.mark.parametrize("case", BAD)
def test_bad_npz_files_give_one_line(tmp_path, case):
    path, expected = _bad(tmp_path, case)
    with pytest.raises(DataError) as err:
        load_dataset("npz", path=str(path))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("data: ") and str(path) in msg and expected in msg, msg


def test_npz_options_and_changed_file(tmp_path):
    p = _save(tmp_path / "d.npz", **_arrays())
    with pytest.raises(DataError, match=r"^data: dataset 'npz' needs a file"):
        load_dataset("npz")
    with pytest.raises(DataError, match=r"^normalize: unknown 'mnist'"):
        load_dataset("npz", path=str(p), normalize="mnist")
    with pytest.raises(DataError, match=r"^data_dir: not an option of dataset 'npz'"):
        load_dataset("npz", path=str(p), data_dir="x")
    h = file_sha256(p)
    assert load_dataset("npz", path=str(p), sha256=h).n_train == 40
    _save(p, **_arrays(seed=5))
    with pytest.raises(DataError, match=r"^data: .* changed since the run was made"):
        load_dataset("npz", path=str(p), sha256=h)


def test_bad_npz_on_the_cli_is_one_line(tmp_path):
    a = _arrays()
    a["x_test"][0, 0] = np.inf
    _save(tmp_path / "b.npz", **a)
    env = dict(os.environ, COLUMNS="200")
    for data, expected in (("b.npz", "x_test has 1 NaN or infinite"), ("none.npz", "does not exist")):
        r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "sweep", "--data", data, "--epochs", "2",
                            "--out", "run"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: data: ") and expected in last, last


# ------------------------------------------------------------------------------- CIFAR-10


def _write_cifar(root: Path, per_batch=4, n_test=6, seed=0) -> tuple[Path, dict]:
    """A miniature cifar-10-batches-py: the real layout and pickle format, a few images per batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    r = np.random.default_rng(seed)
    arrays = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = r.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) + i) % 10]
        arrays[name] = (data, np.asarray(labels))
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASS_NAMES], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f, protocol=2)
    return folder, arrays


def test_cifar10_reads_the_python_batches(tmp_path):
    folder, arrays = _write_cifar(tmp_path)
    d = load_dataset("cifar10", data_dir=str(folder))
    assert d.n_train == 20 and d.n_test == 6 and d.input_shape == (3072,) and d.n_classes == 10
    assert d.meta["class_names"] == list(CIFAR10_CLASS_NAMES)
    x_tr = np.concatenate([arrays[f"data_batch_{j}"][0] for j in range(1, 6)])
    y_tr = np.concatenate([arrays[f"data_batch_{j}"][1] for j in range(1, 6)])
    np.testing.assert_allclose(d.x_train, x_tr / np.float32(255.0), rtol=1e-6)  # "unit": pixels / 255
    np.testing.assert_array_equal(d.y_train, y_tr)
    np.testing.assert_array_equal(d.y_test, arrays["test_batch"][1])
    # the parent folder works too; images keep (3, 32, 32) in CIFAR's channel-major order
    img = load_dataset("cifar10", data_dir=str(tmp_path), flatten=False, normalize="none")
    assert img.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(img.x_test, arrays["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float32))
    sub = load_dataset("cifar10", data_dir=str(folder), classes=[3, 5])
    assert sub.n_classes == 2 and sub.meta["class_names"] == ["cat", "dog"] and sub.classes == (3, 5)
    assert set(np.unique(sub.y_train)) <= {0, 1}


def test_cifar10_absent_or_incomplete_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"^data_dir: cifar10 needs the cifar-10-batches-py folder \(nothing is downloaded\)"):
        load_dataset("cifar10")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path / "nowhere"))
    assert "does not exist" in str(err.value) and "nothing is downloaded" in str(err.value) and "\n" not in str(err.value)
    folder, _ = _write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"lacks data_batch_3"):
        load_dataset("cifar10", data_dir=str(folder))
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"data_batch_3 is not a CIFAR-10 python batch"):
        load_dataset("cifar10", data_dir=str(folder))


def test_sweep_on_npz_resume_and_curvature_with_a_moved_file(tmp_path):
    """``--data FILE.npz`` through sweep and curvature: a changed file is refused in one line (a resumed
    sweep, the curvature analysis), a moved one is found with ``curvature --data``."""
    env = dict(os.environ, COLUMNS="200")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)

    a = _arrays(n_tr=30, n_te=12)
    _save(tmp_path / "d.npz", **a)
    sweep = ["sweep", "--data", "d.npz", "--width", "4", "--depth", "1", "--alphas", "1e-3", "--seeds", "1",
             "--epochs", "5", "--mode", "cold", "--no-figures", "--out", "run"]
    r = cli(*sweep)
    assert r.returncode == 0, r.stderr
    _save(tmp_path / "d.npz", **_arrays(n_tr=30, n_te=12, seed=9))
    r = cli(*sweep)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: data: ")
    assert "changed since the run in run began" in r.stderr and "Traceback" not in r.stderr
    c = cli("curvature", "run", "--exact")
    assert c.returncode == 2 and "changed since the run was made" in c.stderr and "Traceback" not in c.stderr
    (tmp_path / "d.npz").unlink()
    _save(tmp_path / "moved.npz", **a)  # the original content, elsewhere
    assert cli("curvature", "run", "--exact").returncode == 2
    c = cli("curvature", "run", "--exact", "--data", "moved.npz")
    assert c.returncode == 0, c.stderr
