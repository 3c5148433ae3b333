"""The profile arithmetic of benchmarks/bench_authors.py: which kernels are matrix products, and
the wall time during which at least one ran (the matrix-product ceiling of the README's table)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_authors  # noqa: E402

HLO = """\
%fused_computation.1 (p0: f32[2,3], p1: f32[3,4]) -> f32[2,4] {
  %p0 = f32[2,3]{1,0} parameter(0)
  %p1 = f32[3,4]{1,0} parameter(1)
  ROOT %d = f32[2,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.2 (p0: f32[2,4]) -> f32[2,4] {
  %p0 = f32[2,4]{1,0} parameter(0)
  ROOT %e = f32[2,4]{1,0} exponential(%p0)
}

ENTRY %main.9 (a: f32[2,3], b: f32[3,4]) -> f32[2,4] {
  %a = f32[2,3]{1,0} parameter(0)
  %b = f32[3,4]{1,0} parameter(1)
  %ynn_fusion.3 = f32[2,4]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1
  %dot_general.7 = f32[2,4]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %copy.1 = f32[2,4]{1,0} copy(%dot_general.7)
  ROOT %exp_fusion = f32[2,4]{1,0} fusion(%ynn_fusion.3), kind=kLoop, calls=%fused_computation.2
}
"""


def test_matrix_product_kernels_are_dots_and_fusions_that_call_a_dot():
    assert bench_authors._matmul_kernels(HLO) == {"ynn_fusion.3", "dot_general.7"}


def test_union_length_counts_overlaps_once():
    assert bench_authors.union_length([]) == 0.0
    assert bench_authors.union_length([(0, 2), (1, 3), (5, 6)]) == 4.0
    assert bench_authors.union_length([(5, 6), (0, 10), (2, 3)]) == 10.0
    assert bench_authors.union_length([(0, 1), (1, 2)]) == 2.0
