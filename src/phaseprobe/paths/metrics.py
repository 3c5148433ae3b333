"""Paths as point sequences and what is measured along them: error, accuracy, barrier, length.

A path is evaluated *densely*: a polyline (the probe's checkpoints, the linear interpolation)
at every vertex plus points spread uniformly in arc length; a Bezier curve at points uniform in
its parameter ``t``. All points are evaluated as one vectorised ensemble (the landscape's
:meth:`evaluate`). Along the path, ``t`` is the arc-length fraction in ``[0, 1]``.

* **barrier** = max of the training error along the path minus the mean of the errors at its
  two ends (the same for every method; ``test_barrier`` on the test error);
* **length** = Euclidean arc length in parameter space (sum of chord lengths; a curve is
  measured on 257 points);
* **grad_evals** = per-sample gradient evaluations spent to *build* the path (the landscape's
  convention, see :mod:`phaseprobe.paths.landscape`); dense evaluation is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


def arc_positions(vertices: np.ndarray) -> np.ndarray:
    """Cumulative arc length at each vertex of a polyline ``(V, P)`` (starts at 0)."""
    v = np.asarray(vertices, np.float64)
    if len(v) < 2:
        return np.zeros(len(v))
    seg = np.linalg.norm(np.diff(v, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def polyline_points(vertices: np.ndarray, n_points: int = 41) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of a polyline: every vertex plus ``n_points`` uniform in arc length.

    Returns ``(points (m, P), t (m,), is_vertex (m,))`` with ``t`` the arc-length fraction.
    Repeated vertices (zero-length segments) are kept once.
    """
    v = np.asarray(vertices)
    s = arc_positions(v)
    total = float(s[-1]) if len(s) else 0.0
    if total <= 0.0:
        return v[:1].copy(), np.zeros(1), np.ones(1, bool)
    keep = np.concatenate([[True], np.diff(s) > 0])
    v, s = v[keep], s[keep]
    extra = np.linspace(0.0, total, max(int(n_points), 2))
    extra = extra[np.min(np.abs(extra[:, None] - s[None, :]), axis=1) > 1e-9 * total]
    pos = np.concatenate([s, extra])
    is_vertex = np.concatenate([np.ones(len(s), bool), np.zeros(len(extra), bool)])
    order = np.argsort(pos, kind="stable")
    pos, is_vertex = pos[order], is_vertex[order]
    seg = np.clip(np.searchsorted(s, pos, side="right") - 1, 0, len(s) - 2)
    w = ((pos - s[seg]) / (s[seg + 1] - s[seg]))[:, None]
    pts = (1.0 - w) * v[seg].astype(np.float64) + w * v[seg + 1].astype(np.float64)
    pts[is_vertex] = v[np.searchsorted(s, pos[is_vertex])].astype(np.float64)
    return pts.astype(v.dtype), pos / total, is_vertex


def bezier_points(a: np.ndarray, c: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Quadratic Bezier ``(1-t)^2 a + 2 t (1-t) c + t^2 b`` at every ``t`` (rows)."""
    t = np.asarray(t, np.float64)[:, None]
    return ((1 - t) ** 2 * a + 2 * t * (1 - t) * c + t ** 2 * b).astype(np.asarray(a).dtype)


def bezier_length(a, c, b, n: int = 257) -> float:
    return float(arc_positions(bezier_points(a, c, b, np.linspace(0, 1, n)).astype(np.float64))[-1])


def barrier(errors: np.ndarray) -> float:
    """Max along the path minus the mean of the two ends (errors in path order)."""
    e = np.asarray(errors, np.float64)
    if e.size == 0 or not np.all(np.isfinite(e[[0, -1]])):
        return float("nan")
    return float(np.nanmax(e) - 0.5 * (e[0] + e[-1]))


@dataclass
class PathEval:
    """A densely evaluated path of one method between one pair of end points."""

    method: str
    t: np.ndarray
    metrics: dict[str, np.ndarray]
    length: float
    grad_evals: float
    seconds: float = float("nan")
    vertex_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    marks: dict[str, float] = field(default_factory=dict)  # named positions along the path (saddles)
    pair: str = ""

    @property
    def train_error(self) -> np.ndarray:
        return self.metrics["train_error"]

    @property
    def barrier(self) -> float:
        return barrier(self.metrics["train_error"])

    @property
    def test_barrier(self) -> float:
        return barrier(self.metrics.get("test_error", np.full_like(self.t, np.nan)))

    @property
    def argmax_t(self) -> float:
        return float(self.t[int(np.nanargmax(self.metrics["train_error"]))])

    def summary(self) -> dict:
        m = self.metrics
        acc = m.get("test_acc")
        return {
            "pair": self.pair, "method": self.method, "barrier": self.barrier, "test_barrier": self.test_barrier,
            "max_error": float(np.nanmax(m["train_error"])), "error_start": float(m["train_error"][0]),
            "error_end": float(m["train_error"][-1]), "t_at_max": self.argmax_t,
            "min_test_acc": float(np.nanmin(acc)) if acc is not None and np.isfinite(acc).any() else float("nan"),
            "length": self.length, "grad_evals": float(self.grad_evals), "seconds": self.seconds, "n_points": int(len(self.t)),
        }

    def frame(self) -> pd.DataFrame:
        """One row per evaluated point: t, errors, accuracies, per-class test accuracy."""
        d = {"pair": self.pair, "method": self.method, "t": self.t}
        for k, v in self.metrics.items():
            v = np.asarray(v)
            if v.ndim == 1:
                d[k] = v
            elif v.ndim == 2 and k == "test_class_acc":
                for c in range(v.shape[1]):
                    d[f"class_acc_{c}"] = v[:, c]
        return pd.DataFrame(d)


def evaluate_points(land, points: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of the unregularised model at every point (one vectorised evaluation)."""
    return land.evaluate(points, 0.0, None)


def evaluate_polyline(land, vertices: np.ndarray, method: str, *, n_points: int = 41, grad_evals: float = 0.0,
                      seconds: float = float("nan"), marks: dict[str, np.ndarray] | None = None, pair: str = "") -> PathEval:
    """Dense evaluation of the polyline through ``vertices``; ``marks`` name vertices to locate (by value)."""
    pts, t, is_v = polyline_points(vertices, n_points)
    met = evaluate_points(land, pts)
    length = float(arc_positions(np.asarray(vertices, np.float64))[-1])
    mk = {}
    for name, x in (marks or {}).items():
        d = np.linalg.norm(pts.astype(np.float64) - np.asarray(x, np.float64)[None], axis=1)
        mk[name] = float(t[int(np.argmin(d))])
    return PathEval(method=method, t=t, metrics=met, length=length, grad_evals=grad_evals, seconds=seconds,
                    vertex_t=t[is_v], marks=mk, pair=pair)


def evaluate_linear(land, a: np.ndarray, b: np.ndarray, *, n_points: int = 41, pair: str = "") -> PathEval:
    """The straight segment from ``a`` to ``b`` (no optimisation: 0 gradient evaluations)."""
    return evaluate_polyline(land, np.stack([a, b]), "linear", n_points=n_points, grad_evals=0.0, seconds=0.0, pair=pair)


def evaluate_bezier(land, a, c, b, *, n_points: int = 41, grad_evals: float = 0.0, seconds: float = float("nan"),
                    method: str = "bezier", pair: str = "") -> PathEval:
    """A quadratic Bezier curve with control point ``c``, at ``n_points`` uniform in ``t``; ``t`` reported as arc fraction."""
    tt = np.linspace(0.0, 1.0, max(int(n_points), 2))
    pts = bezier_points(a, c, b, tt)
    met = evaluate_points(land, pts)
    fine = np.linspace(0, 1, 257)
    s = arc_positions(bezier_points(a, c, b, fine).astype(np.float64))
    total = float(s[-1])
    tf = np.interp(tt, fine, s) / total if total > 0 else tt
    return PathEval(method=method, t=tf, metrics=met, length=total, grad_evals=grad_evals, seconds=seconds,
                    vertex_t=np.array([0.0, 1.0]), pair=pair)
