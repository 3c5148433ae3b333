"""The throughput benchmarks still run against the current trainer (tiny sizes, no timing claims).

They reach into the trainer's compiled epoch program (``Trainer._prepare`` / ``Trainer._run``),
so a change of its signature breaks them without breaking any other test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_bench_trainer_runs_at_a_tiny_size():
    r = _run("benchmarks/bench_trainer.py", "--members", "2", "--n", "512", "--epochs", "1", "--repeats", "1", "--no-torch")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ensemble (K=2, epoch loop)" in r.stdout


def test_bench_authors_runs_with_its_profile_at_a_tiny_size():
    pytest.importorskip("torch")
    r = _run("benchmarks/bench_authors.py", "--steps", "20", "--rounds", "1", "--profile")
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("ratios: k3=") and " k16=" in last and " limit=" in last
    assert "matrix products ran" in r.stdout and "machine limit" in r.stdout
