"""benchmarks/device_check.sh and its bundle (benchmarks/make_device_bundle.sh).

The bundle carries the wheels of what ``phaseprobe sweep --no-figures`` imports beyond JAX's own
packages; these tests run that path in a subprocess with the heavy packages the bundle leaves
out made unimportable, compare what it imported with the bundle's pins, and (slow, needs the
package index) build the bundle, check its size and run the sweep on the bundle's wheels alone.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "benchmarks" / "make_device_bundle.sh"
CHECK = ROOT / "benchmarks" / "device_check.sh"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
LIMIT = 64_000_000

# what any JAX install brings (jax's own requirements): never in the bundle
JAX_OWN = {"jax", "jaxlib", "numpy", "scipy", "ml-dtypes", "opt-einsum"}
# imported on the path only when present, and not needed: pyarrow is pandas' first Parquet engine
# (the bundle carries fastparquet, its second), cloudpickle is imported by pyarrow, filelock by
# jax's compilation cache when installed
OPTIONAL = {"pyarrow", "cloudpickle", "filelock"}
# the heavy packages the bundle leaves out: the sweep path must run without them
HEAVY = ["matplotlib", "plotly", "sklearn", "ray", "torch", "PIL"]

# a tiny run of the authors' full spec through the command line, in a subprocess that cannot
# import the modules named in argv[1] (block) or anything outside stdlib + argv[1] (allow);
# it prints the third-party top-level modules it imported
RUNNER = r"""
import importlib.abc, importlib.machinery, json, sys
mode, names = sys.argv[1].split(":", 1)
names = set(filter(None, names.split(",")))
std = set(sys.stdlib_module_names)

# in front of every finder but the built-in and frozen ones: a shut module is not found at all
# (importlib.util.find_spec probes see it absent, as on a machine without it)
class Gate(importlib.abc.MetaPathFinder):
    def __init__(self, finders):
        self.finders = finders

    @staticmethod
    def shut(top):
        return top in names if mode == "block" else not (top in names or top in std or top.startswith("_"))

    def find_distributions(self, *args, **kwargs):  # importlib.metadata: shut packages have none
        for f in self.finders:
            for d in getattr(f, "find_distributions", lambda *a, **k: [])(*args, **kwargs):
                if not self.shut(d.metadata["Name"].replace("-", "_").lower()):
                    yield d

    def find_spec(self, name, path, target=None):
        if self.shut(name.partition(".")[0]):
            return None
        for f in self.finders:
            spec = f.find_spec(name, path, target) if hasattr(f, "find_spec") else None
            if spec is not None:
                return spec
        return None

keep = (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)
others = [f for f in sys.meta_path if f not in keep]
sys.meta_path[:] = [f for f in sys.meta_path if f in keep] + [Gate(others)]
sys.argv = ["phaseprobe", *sys.argv[2:]]
from phaseprobe.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
tops = sorted({m.partition(".")[0] for m in list(sys.modules)} - std - {"__main__", "phaseprobe", "cython_runtime"})
print("MODULES " + json.dumps([t for t in tops if not t.startswith("_")]))
sys.exit(code)
"""


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    out = subprocess.run(["bash", str(BUILDER), "--pins"], capture_output=True, text=True, cwd=ROOT, check=True)
    pins = dict(line.split("==") for line in out.stdout.split())
    return {_canon(k): v for k, v in pins.items()}


def _tiny_sweep(gate: str, out: Path, env=None) -> tuple[subprocess.CompletedProcess, list[str]]:
    args = ["sweep", "--spec", str(ROOT / "examples" / "authors_fmnist_full.toml"), "--no-figures",
            "--out", str(out), "--set", "n_train=300", "--set", "n_test=300", "--set", "epochs=1",
            "--set", "alphas=lin:0.00044:0.00088:2", "--set", "seeds=1"]
    res = subprocess.run([sys.executable, "-c", RUNNER, gate, *args], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=900)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("MODULES ")]
    mods = json.loads(lines[-1][len("MODULES "):]) if lines else []
    return res, mods


def test_scripts_parse():
    for script in (BUILDER, CHECK):
        res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, f"{script.name}: {res.stderr}"


def test_pins_are_the_lock_and_leave_out_the_heavy_packages():
    pins = _pins()
    lines = (ln.split("#")[0].strip() for ln in (ROOT / "requirements.lock").read_text().splitlines())
    lock = {_canon(k): v for k, v in (ln.split("==") for ln in lines if "==" in ln)}
    for name, version in pins.items():
        if name in lock:
            assert version == lock[name], f"{name}: bundle pins {version}, requirements.lock {lock[name]}"
    assert {"fastparquet", "cramjam", "fsspec"} <= set(pins)  # pandas' Parquet engine without pyarrow
    assert not ({"pyarrow", "matplotlib", "plotly", "scikit-learn", "ray", "torch"} | JAX_OWN) & set(pins)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_bundle_covers_the_sweep_path(tmp_path):
    """The sweep path runs with matplotlib & co unimportable, and every third-party package it
    imports is pinned in the bundle, is JAX's own, or is one that pandas/jax use only when present."""
    res, mods = _tiny_sweep("block:" + ",".join(HEAVY), tmp_path / "run")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (tmp_path / "run" / "transitions.csv").is_file()
    assert mods and "pandas" in mods and not set(HEAVY) & set(mods)
    dists = md.packages_distributions()
    needed = {_canon(d) for m in mods for d in dists.get(m, [m])}
    pins = set(_pins())
    missing = needed - pins - JAX_OWN - OPTIONAL
    assert not missing, f"imported on the sweep path but not in the device bundle: {sorted(missing)}"
    # and the check must not fail open: a gate that shuts pandas stops the sweep
    res, _ = _tiny_sweep("block:pandas", tmp_path / "run2")
    assert res.returncode != 0 and "pandas" in (res.stdout + res.stderr)


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the bundle's default binary wheels are for Python 3.11")
def test_built_bundle_is_small_and_runs_the_sweep_alone(tmp_path):
    """Build the bundle from the package index into a tmp folder: under 64 MB with the data, one
    wheel per pin; then run the sweep path with nothing importable but the standard library,
    JAX's own packages and the bundle's wheels (pyarrow shut out: pandas must use fastparquet)."""
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                            "-d", str(tmp_path / "probe"), "mdurl==0.1.2"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        pytest.skip("the package index is not reachable: " + (probe.stderr.strip().splitlines() or ["?"])[-1])
    dest = tmp_path / "bundle"
    res = subprocess.run(["bash", str(BUILDER), str(dest)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert size < LIMIT, f"bundle is {size / 1e6:.1f} MB"
    wheels = sorted((dest / "wheels").glob("*.whl"))
    pins = _pins()
    assert {_canon(w.name.split("-")[0]) for w in wheels} == set(pins)
    assert sorted(p.name for p in (dest / "fashion-mnist").iterdir()) == sorted(
        f.name for f in FMNIST.glob("*-ubyte.gz"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", str(site), *map(str, wheels)], check=True)
    tops = {p.name.split(".")[0].split("-")[0] for p in site.iterdir()
            if not p.name.endswith((".dist-info", ".data")) and p.name != "bin"}
    allow = tops | {"jax", "jaxlib", "jax_plugins", "numpy", "scipy", "ml_dtypes", "opt_einsum", "phaseprobe"}
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT / 'src'}", "HOME": str(tmp_path)}
    res, mods = _tiny_sweep("allow:" + ",".join(sorted(allow)), tmp_path / "run", env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "fastparquet" in mods and "pyarrow" not in mods
    assert (tmp_path / "run" / "plateaus.csv").is_file()
