"""Datasets: the IDX reader, the image loaders, the synthetic generators, the registry, bad input."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from phaseprobe.data import DATASETS, DataError, Dataset, dataset_options, load_dataset, read_idx, write_idx
from phaseprobe.data import images
from phaseprobe.errors import PhaseprobeError

FOUR = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# ---------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    p = write_idx(tmp_path / f"arr-idx3{suffix}", a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    head = p.read_bytes()[:2]
    assert (head == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_header_is_the_standard_one(tmp_path):
    p = write_idx(tmp_path / "l", np.array([1, 2, 3], dtype=np.uint8))
    assert p.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


def test_idx_name_with_or_without_gz(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "zipped.gz", a)
    write_idx(tmp_path / "plain", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped"), a)  # finds zipped.gz
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), a)  # finds plain


def test_idx_gzip_detected_by_content(tmp_path):
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    write_idx(tmp_path / "x.gz", a)
    (tmp_path / "noext").write_bytes((tmp_path / "x.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "noext"), a)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_file_names_the_file(tmp_path, suffix):
    a = np.arange(100, dtype=np.uint8).reshape(10, 10)
    full = tmp_path / f"full{suffix}"
    write_idx(full, a)
    cut = tmp_path / f"cut{suffix}"
    raw = full.read_bytes()
    if suffix == ".gz":
        # truncated payload inside a valid gzip stream, and a truncated gzip stream
        cut.write_bytes(gzip.compress(gzip.decompress(raw)[:-7]))
        with pytest.raises(DataError) as e:
            read_idx(cut)
        _one_line_error(e, str(cut), "truncated")
        broken = tmp_path / "broken.gz"
        broken.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(DataError) as e:
            read_idx(broken)
        _one_line_error(e, str(broken))
    else:
        cut.write_bytes(raw[:-7])
        with pytest.raises(DataError) as e:
            read_idx(cut)
        _one_line_error(e, str(cut), "truncated")
        head = tmp_path / "head"
        head.write_bytes(raw[:6])
        with pytest.raises(DataError) as e:
            read_idx(head)
        _one_line_error(e, str(head), "truncated")


def test_idx_bad_magic_type_and_trailing_bytes(tmp_path):
    good = write_idx(tmp_path / "g", np.arange(4, dtype=np.uint8)).read_bytes()
    cases = {
        "magic": b"\x01" + good[1:],
        "type": good[:2] + b"\x07" + good[3:],
        "trailing": good + b"\x00\x00",
        "zero-dim": good[:3] + b"\x00",
    }
    for name, raw in cases.items():
        p = tmp_path / name
        p.write_bytes(raw)
        with pytest.raises(DataError) as e:
            read_idx(p)
        _one_line_error(e, str(p))


def test_idx_missing_file_and_unwritable_dtype(tmp_path):
    with pytest.raises(DataError) as e:
        read_idx(tmp_path / "nothing")
    _one_line_error(e, "nothing")
    with pytest.raises(DataError) as e:
        write_idx(tmp_path / "c", np.zeros(3, dtype=np.complex64))
    _one_line_error(e, "dtype")


# ------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_fixed_split():
    d = load_dataset("digits")
    assert isinstance(d, Dataset) and d.name == "digits"
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32 and d.y_test.dtype == np.int32
    assert d.n_classes == 10 and d.classes == tuple(range(10)) and d.task == "classification"
    # default normalisation "unit": pixels / 16 in [0, 1]
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    # stratified: every class's share of the test split is within one image of 25 %
    counts_all = np.bincount(np.concatenate([d.y_train, d.y_test]))
    assert np.all(np.abs(np.bincount(d.y_test) - 0.25 * counts_all) <= 1)
    # deterministic: the split does not depend on seed
    d2 = load_dataset("digits", seed=5)
    np.testing.assert_array_equal(d.x_train, d2.x_train)
    np.testing.assert_array_equal(d.y_test, d2.y_test)
    # another split seed gives another split of the same images
    d3 = load_dataset("digits", split_seed=1)
    assert not np.array_equal(d.y_train, d3.y_train)


def test_digits_flatten_false_and_normalisations():
    d = load_dataset("digits", flatten=False, normalize="none")
    assert d.x_train.shape == (1347, 1, 8, 8) and d.input_shape == (1, 8, 8) and d.input_dim == 64
    assert d.x_train.max() == 16.0
    flat = load_dataset("digits", normalize="none")
    np.testing.assert_array_equal(d.x_train.reshape(1347, 64), flat.x_train)
    mn = load_dataset("digits", normalize="mnist")
    np.testing.assert_allclose(mn.x_train, (flat.x_train / 16 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    st = load_dataset("digits", normalize="standard")
    sd = flat.x_train.std(axis=0)
    live = sd > 0
    np.testing.assert_allclose(st.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(st.x_train.std(axis=0)[live], 1, rtol=1e-4)
    # statistics come from the train split only
    np.testing.assert_allclose(
        st.x_test[:, live], (flat.x_test[:, live] - flat.x_train.mean(0)[live]) / sd[live], rtol=1e-4, atol=1e-4
    )
    gl = load_dataset("digits", normalize="global")
    assert abs(float(gl.x_train.mean())) < 1e-4 and abs(float(gl.x_train.std()) - 1) < 1e-4


def test_digits_class_subset_reindexes_in_given_order():
    full = load_dataset("digits", normalize="none")
    sub = load_dataset("digits", classes=[7, 3], normalize="none")
    assert sub.n_classes == 2 and sub.classes == (7, 3)
    for new, old in enumerate((7, 3)):
        np.testing.assert_array_equal(sub.x_train[sub.y_train == new], full.x_train[full.y_train == old])
        np.testing.assert_array_equal(sub.x_test[sub.y_test == new], full.x_test[full.y_test == old])
    assert set(np.unique(sub.y_train)) == {0, 1}
    first3 = load_dataset("digits", classes=3)
    assert first3.classes == (0, 1, 2) and set(np.unique(first3.y_train)) == {0, 1, 2}
    assert load_dataset("digits", classes="0,1,2").classes == (0, 1, 2)
    assert first3.meta["class_names"] == ["0", "1", "2"]


def test_digits_subsets_are_stratified_seeded_and_nested():
    a = load_dataset("digits", n_train=200, n_test=100, seed=1)
    b = load_dataset("digits", n_train=200, n_test=100, seed=1)
    c = load_dataset("digits", n_train=200, n_test=100, seed=2)
    assert a.n_train == 200 and a.n_test == 100
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert np.all(np.abs(np.bincount(a.y_train, minlength=10) - 20) <= 1)
    small = load_dataset("digits", n_train=100, seed=1)
    rows_big = {r.tobytes() for r in a.x_train}
    assert sum(r.tobytes() in rows_big for r in small.x_train) >= 95


# --------------------------------------------------------------------------- IDX folders


def _write_mnist_folder(folder: Path, n_train=40, n_test=20, hw=(6, 5), gz=(True, False, False, True), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [
        rng.integers(0, 256, size=(n_train, *hw), dtype=np.uint8),
        (np.arange(n_train) % 10).astype(np.uint8),
        rng.integers(0, 256, size=(n_test, *hw), dtype=np.uint8),
        (np.arange(n_test) % 10).astype(np.uint8),
    ]
    for stem, arr, z in zip(FOUR, arrays, gz):
        write_idx(folder / (stem + (".gz" if z else "")), arr)
    return arrays


def test_mnist_from_a_folder(tmp_path):
    xtr, ytr, xte, yte = _write_mnist_folder(tmp_path / "m")
    d = load_dataset("mnist", data_dir=tmp_path / "m", normalize="none")
    assert d.x_train.shape == (40, 30) and d.x_test.shape == (20, 30)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    np.testing.assert_array_equal(d.x_train, xtr.reshape(40, 30))
    np.testing.assert_array_equal(d.y_test, yte)
    m = load_dataset("mnist", data_dir=str(tmp_path / "m"), flatten=False)  # default "mnist" protocol
    assert m.x_train.shape == (40, 1, 6, 5)
    np.testing.assert_allclose(m.x_train[:, 0], (xtr / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    u = load_dataset("mnist", data_dir=tmp_path / "m", normalize="unit", classes=[9, 0], n_train=6, seed=3)
    assert u.classes == (9, 0) and u.n_train == 6 and np.bincount(u.y_train).tolist() == [3, 3]
    assert 0.0 <= u.x_train.min() and u.x_train.max() <= 1.0


def test_mnist_missing_files_error_names_the_four_files(tmp_path):
    needles = [f + "[.gz]" for f in FOUR] + ["--data-dir"]
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    _one_line_error(e, "data_dir", *needles)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "absent")
    _one_line_error(e, "data_dir", str(tmp_path / "absent"), *needles)
    _write_mnist_folder(tmp_path / "part")
    (tmp_path / "part" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "part")
    msg = _one_line_error(e, "lacks t10k-labels-idx1-ubyte", *needles)
    assert msg.startswith("data_dir:")


def test_fashion_missing_package_says_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", str(tmp_path / "no-package"))
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist")
    _one_line_error(e, "apt-get install dataset-fashion-mnist", *FOUR)
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    _one_line_error(e, "--data-dir", *FOUR)


def test_idx_folder_with_corrupt_or_mismatched_files(tmp_path):
    _write_mnist_folder(tmp_path / "t")
    bad = tmp_path / "t" / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "t")
    _one_line_error(e, str(bad), "truncated")
    _write_mnist_folder(tmp_path / "mm", n_test=20)
    write_idx(tmp_path / "mm" / "t10k-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "mm")
    _one_line_error(e, "t10k-images-idx3-ubyte", "20 images", "19")


def test_idx_folder_checks_counts_before_reading_images(tmp_path):
    _write_mnist_folder(tmp_path / "c")
    # corrupt image files: the option errors must come first, from the labels alone
    for stem in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        (tmp_path / "c" / stem).write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "c", n_train=41)
    _one_line_error(e, "n_train", "41", "40")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "c", classes=[0, 1], n_test=5)
    _one_line_error(e, "n_test", "4")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "c", classes=11)
    _one_line_error(e, "classes", "11", "10")


FASHION = Path(images.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not all((FASHION / (f + ".gz")).is_file() or (FASHION / f).is_file() for f in FOUR),
    reason=f"Fashion-MNIST not installed at {FASHION} (apt-get install dataset-fashion-mnist)",
)


@needs_fashion
def test_fashion_mnist_loads_from_the_debian_folder():
    d = load_dataset("fashion-mnist")
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert np.bincount(d.y_train).tolist() == [6000] * 10 and np.bincount(d.y_test).tolist() == [1000] * 10
    assert d.meta["class_names"][9] == "Ankle boot"
    # the authors' protocol: (x/255 - 0.1307)/0.3081, so pixel 0 maps to -0.1307/0.3081
    assert np.isclose(d.x_train.min(), -0.1307 / 0.3081, atol=1e-6)
    s = load_dataset("fashion_mnist", classes=[1, 7, 9], n_train=300, n_test=90, flatten=False, seed=4)
    assert s.x_train.shape == (300, 1, 28, 28) and s.classes == (1, 7, 9)
    assert np.bincount(s.y_train).tolist() == [100, 100, 100]
    assert s.meta["class_names"] == ["Trouser", "Sneaker", "Ankle boot"]


# ------------------------------------------------------------------------------ synthetic


def _nearest_mean_accuracy(d: Dataset) -> float:
    means = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(d.n_classes)])
    dist = ((d.x_test[:, None, :] - means[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == d.y_test).mean())


def test_gaussian_mixture_shapes_balance_determinism():
    d = load_dataset("gaussian-mixture", n_classes=4, dim=7, n_train=103, n_test=50, seed=3)
    assert d.x_train.shape == (103, 7) and d.x_test.shape == (50, 7)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32 and d.n_classes == 4
    assert sorted(np.bincount(d.y_train).tolist()) == [25, 26, 26, 26]
    np.testing.assert_allclose(np.linalg.norm(d.meta["means"], axis=1), 2.0, rtol=1e-6)
    again = load_dataset("gaussian-mixture", n_classes=4, dim=7, n_train=103, n_test=50, seed=3)
    np.testing.assert_array_equal(d.x_train, again.x_train)
    other = load_dataset("gaussian-mixture", n_classes=4, dim=7, n_train=103, n_test=50, seed=4)
    assert not np.array_equal(d.x_train, other.x_train)
    # n_train does not move the means or the test set
    more = load_dataset("gaussian-mixture", n_classes=4, dim=7, n_train=500, n_test=50, seed=3)
    np.testing.assert_array_equal(d.meta["means"], more.meta["means"])
    np.testing.assert_array_equal(d.x_test, more.x_test)


def test_gaussian_mixture_separation_makes_classes_easier():
    accs = [
        _nearest_mean_accuracy(load_dataset("gaussian-mixture", n_classes=5, dim=10, separation=s, n_train=500, n_test=500))
        for s in (0.0, 1.0, 3.0, 6.0)
    ]
    assert accs[0] < 0.3  # chance is 0.2
    assert accs[0] < accs[1] < accs[2] <= accs[3]
    assert accs[3] > 0.95


def test_teacher_classification_matches_its_stored_teacher():
    d = load_dataset("teacher", n_classes=4, in_dim=6, hidden=16, depth=2, n_train=400, n_test=100, seed=1)
    assert d.x_train.shape == (400, 6) and d.y_train.dtype == np.int32 and d.n_classes == 4
    assert np.all(np.bincount(d.y_train, minlength=4) > 40)  # standardised logits: no class vanishes
    h = d.x_train.astype(np.float64)
    layers = d.meta["teacher"]
    assert [w.shape for w, _ in layers] == [(16, 6), (16, 16), (4, 16)]
    for w, b in layers[:-1]:
        h = np.tanh(h @ w.T + b)
    logits = h @ layers[-1][0].T
    pred = np.argmax((logits - d.meta["logit_mean"]) / d.meta["logit_std"], axis=1)
    assert (pred == d.y_train).mean() > 0.99  # float32-stored weights: ties aside, identical
    noisy = load_dataset("teacher", n_classes=4, in_dim=6, hidden=16, depth=2, n_train=400, n_test=100, seed=1, noise=1.0)
    np.testing.assert_array_equal(noisy.x_train, d.x_train)
    assert 0.3 < (noisy.y_train == d.y_train).mean() < 0.95


def test_teacher_regression():
    d = load_dataset("teacher", task="regression", out_dim=3, in_dim=5, depth=1, activation="relu", n_train=50, n_test=20)
    assert d.task == "regression" and d.y_train.shape == (50, 3) and d.y_train.dtype == np.float32
    assert d.output_dim == 3 and d.n_classes == 0
    (w1, b1), (w2, b2) = d.meta["teacher"]
    f = np.maximum(d.x_train @ w1.T + b1, 0) @ w2.T + b2
    np.testing.assert_allclose(d.y_train, f, rtol=1e-4, atol=1e-5)
    lin = load_dataset("teacher", task="regression", depth=0, in_dim=4, n_train=10, n_test=10)
    assert len(lin.meta["teacher"]) == 1 and lin.y_train.shape == (10, 1)


def test_lowrank_linear_whitening_identity():
    s = (3.0, 2.0, 0.5)
    d = load_dataset("lowrank-linear", singular_values=s, in_dim=6, out_dim=4, n_train=40, n_test=30, seed=2)
    assert d.task == "regression" and d.x_train.shape == (40, 6) and d.y_train.shape == (40, 4)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.float32
    A, U, V = (d.meta[k].astype(np.float64) for k in ("A", "U", "V"))
    np.testing.assert_allclose(np.linalg.svd(A, compute_uv=False)[:3], s, rtol=1e-5)
    np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(A, (U * np.array(s)) @ V.T, atol=1e-6)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        x = x.astype(np.float64)
        np.testing.assert_allclose(x.T @ x / len(x), np.eye(6), atol=1e-5)
        np.testing.assert_allclose(y, x @ A.T, atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(3):
        W = rng.standard_normal((4, 6))
        x = d.x_train.astype(np.float64)
        mse = np.mean(0.5 * np.sum((x @ A.T - x @ W.T) ** 2, axis=1))
        np.testing.assert_allclose(mse, 0.5 * np.sum((A - W) ** 2), rtol=1e-5)
    # without whitening the identity only holds on average
    raw = load_dataset("lowrank-linear", singular_values=s, in_dim=6, out_dim=4, n_train=40, seed=2, whiten=False)
    xr = raw.x_train.astype(np.float64)
    assert np.abs(xr.T @ xr / 40 - np.eye(6)).max() > 0.05


def test_lowrank_linear_options():
    d = load_dataset("lowrank-linear", rotate=False, n_train=20, n_test=20)
    np.testing.assert_allclose(d.meta["A"], np.diag([5.0, 4.0, 3.0, 2.0, 1.0]), atol=0)
    a = load_dataset("lowrank-linear", seed=7, n_train=30, n_test=10)
    b = load_dataset("lowrank-linear", seed=7, n_train=30, n_test=10)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    noisy = load_dataset("lowrank-linear", seed=7, n_train=30, n_test=10, noise=0.1)
    resid = noisy.y_train - noisy.x_train @ noisy.meta["A"].T
    assert 0.05 < resid.std() < 0.2


# ------------------------------------------------------------------------------- registry


def test_registry_names_options_and_aliases():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "gaussian-mixture", "teacher", "lowrank-linear", "modular",
                        "npz", "cifar10")
    assert dataset_options("digits")["normalize"] == "unit"
    assert dataset_options("lowrank-linear")["whiten"] is True
    assert "data_dir" in dataset_options("MNIST")
    d = load_dataset(" Gaussian_Mixture", n_train=10, n_test=10, n_classes=2)
    assert d.name == "gaussian-mixture" and d.n_train == 10
    # None means "the default"
    a = load_dataset("gaussian-mixture", n_train=None, n_test=20)
    assert a.n_train == 1000


def test_modular_is_registered_lazily():
    if importlib.util.find_spec("phaseprobe.data.modular") is None:
        with pytest.raises(DataError) as e:
            load_dataset("modular")
        _one_line_error(e, "modular")
    else:
        d = load_dataset("modular", p=7, train_frac=0.5)
        assert d.n_classes == 7 and d.x_train.shape[1] == 2
        assert d.n_train + d.n_test == 49
        with pytest.raises(DataError) as e:  # an option modular does not use is not dropped silently
            load_dataset("modular", p=7, normalize="standard")
        _one_line_error(e, "normalize", "valid options", "train_frac")


BAD = [
    (("imagenet",), {}, ("dataset", "digits", "mnist", "fashion-mnist", "gaussian-mixture", "teacher", "lowrank-linear", "modular")),
    ((3,), {}, ("dataset",)),
    (("digits",), {"colour": True}, ("colour", "valid options", "normalize")),
    (("digits",), {"classes": 11}, ("classes", "11", "10")),
    (("digits",), {"classes": [0, 12]}, ("classes", "12")),
    (("digits",), {"classes": [4]}, ("classes", "at least 2")),
    (("digits",), {"classes": [1, 1]}, ("classes", "repeats")),
    (("digits",), {"classes": "a,b"}, ("classes",)),
    (("digits",), {"classes": 1.5}, ("classes",)),
    (("digits",), {"n_train": 0}, ("n_train",)),
    (("digits",), {"n_train": -3}, ("n_train",)),
    (("digits",), {"n_train": 2.5}, ("n_train", "integer")),
    (("digits",), {"n_train": 5000}, ("n_train", "5000", "1347")),
    (("digits",), {"n_test": 451}, ("n_test", "450")),
    (("digits",), {"classes": [0, 1], "n_train": 300}, ("n_train", "300")),
    (("digits",), {"train_frac": 0.0}, ("train_frac",)),
    (("digits",), {"train_frac": 1.0}, ("train_frac",)),
    (("digits",), {"train_frac": 1.5}, ("train_frac",)),
    (("digits",), {"train_frac": 0.002}, ("train_frac", "fewer than")),
    (("digits",), {"normalize": "zscore"}, ("normalize", "standard", "mnist")),
    (("digits",), {"flatten": "yes"}, ("flatten",)),
    (("digits",), {"seed": -1}, ("seed",)),
    (("gaussian-mixture",), {"n_classes": 1}, ("n_classes",)),
    (("gaussian-mixture",), {"separation": -1.0}, ("separation",)),
    (("gaussian-mixture",), {"separation": float("nan")}, ("separation",)),
    (("gaussian-mixture",), {"dim": 0}, ("dim",)),
    (("gaussian-mixture",), {"n_train": 0}, ("n_train",)),
    (("gaussian-mixture",), {"normalize": "mnist"}, ("normalize", "pixel")),
    (("gaussian-mixture",), {"classes": 3}, ("classes", "valid options")),
    (("teacher",), {"out_dim": 3}, ("out_dim", "regression")),
    (("teacher",), {"task": "regression", "n_classes": 3}, ("n_classes", "classification")),
    (("teacher",), {"task": "ranking"}, ("task", "classification", "regression")),
    (("teacher",), {"activation": "swish"}, ("activation", "tanh")),
    (("teacher",), {"depth": -1}, ("depth",)),
    (("teacher",), {"noise": -0.1}, ("noise",)),
    (("lowrank-linear",), {"singular_values": []}, ("singular_values", "empty")),
    (("lowrank-linear",), {"singular_values": [1.0, -2.0]}, ("singular_values", "-2")),
    (("lowrank-linear",), {"singular_values": "5,4"}, ("singular_values",)),
    (("lowrank-linear",), {"singular_values": [3, 2, 1], "in_dim": 2}, ("singular_values", "3x2", "at most 2")),
    (("lowrank-linear",), {"n_train": 3}, ("n_train", "in_dim=5")),
    (("lowrank-linear",), {"whiten": 1}, ("whiten",)),
    (("lowrank-linear",), {"normalize": "standard"}, ("normalize", "valid options")),
]


@pytest.mark.parametrize("args,kwargs,needles", BAD, ids=[f"{a[0]}-{sorted(k)}" for a, k, _ in BAD])
def test_bad_input_raises_one_line_data_error(args, kwargs, needles):
    with pytest.raises(DataError) as e:
        load_dataset(*args, **kwargs)
    assert isinstance(e.value, PhaseprobeError) and isinstance(e.value, ValueError)
    _one_line_error(e, *needles)
