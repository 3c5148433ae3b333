"""The basin hierarchy: accuracy basins as nodes, the saddles between them as edges.

A **basin** is what a model encodes: for networks the set of classes whose test recall and
precision both reach the landscape's ``learned`` threshold; for toy functions the minimum of
E that gradient descent on E reaches. A node keeps the best test accuracy and the lowest
training error seen among the probe checkpoints in that basin, and the strengths where it
was seen.

Edges come from the probes (:func:`phaseprobe.paths.probe.run_probe`):

* ``saddle``: a confirmed jump with a refined saddle of E; its height is ``E(saddle)``, the
  barriers ``E(saddle) - E(side)`` are measured from the two transition models;
* ``jump``: a confirmed jump without a saddle search;
* ``drift``: the class set changed between two grid points without a jump (continuous);
* ``return``: an excursion (ours) that came back down to a basin other than the one it left.

Jumps that keep the class set (e.g. between two minima encoding the same classes) are edges
from a node to itself: listed in the tables, drawn as a loop.
"""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from phaseprobe.paths.probe import ProbeResult, basin_str


@dataclass
class BasinNode:
    key: tuple
    accuracy: float = float("nan")
    error: float = float("inf")
    n_seen: int = 0
    strengths: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return basin_str(self.key)

    @property
    def n_classes(self) -> int:
        return len(self.key) if all(isinstance(v, (int, np.integer)) for v in self.key) else -1


@dataclass
class BasinEdge:
    src: tuple
    dst: tuple
    kind: str
    strength_c: float = float("nan")
    saddle_error: float = float("nan")
    error_src: float = float("nan")
    error_dst: float = float("nan")
    index: int = -1
    index_lower_bound: bool = False
    negative_eigs: str = ""
    probe: str = ""

    def row(self) -> dict:
        return {"from": basin_str(self.src), "to": basin_str(self.dst), "kind": self.kind, "strength_c": self.strength_c,
                "saddle_error": self.saddle_error, "barrier_from": self.saddle_error - self.error_src,
                "barrier_to": self.saddle_error - self.error_dst, "error_from": self.error_src, "error_to": self.error_dst,
                "saddle_index": self.index, "index_lower_bound": self.index_lower_bound, "negative_eigs": self.negative_eigs,
                "probe": self.probe}


@dataclass
class BasinGraph:
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    convention: str = "l2"

    def node(self, key) -> BasinNode:
        key = tuple(key)
        if key not in self.nodes:
            self.nodes[key] = BasinNode(key)
        return self.nodes[key]

    def nodes_frame(self) -> pd.DataFrame:
        rows = [{"basin": n.label, "n_classes": n.n_classes, "best_test_acc": n.accuracy, "lowest_error": n.error,
                 "checkpoints": n.n_seen, "strength_min": min(n.strengths) if n.strengths else np.nan,
                 "strength_max": max(n.strengths) if n.strengths else np.nan} for n in self.nodes.values()]
        df = pd.DataFrame(rows)
        return df.sort_values(["best_test_acc", "n_classes"], ascending=False, ignore_index=True) if len(df) else df

    def edges_frame(self) -> pd.DataFrame:
        return pd.DataFrame([e.row() for e in self.edges])


def _measured(nd: "BasinNode", acc, err) -> None:
    """Fold one measured model into a node: the best test accuracy and the lowest error seen."""
    acc, err = float(acc), float(err)
    if np.isfinite(acc) and not (nd.accuracy >= acc):
        nd.accuracy = acc
    if np.isfinite(err):
        nd.error = float(min(nd.error, err))


def build_basin_graph(results: Sequence[ProbeResult], names: Sequence[str] | None = None) -> BasinGraph:
    """Nodes and edges from one or more probe results (see the module docstring)."""
    g = BasinGraph()
    for r_i, res in enumerate(results):
        name = names[r_i] if names else f"probe{r_i}"
        g.convention = res.convention
        rec = res.records[res.records["phase"] == "probe"]
        for k in range(res.n_members):
            sub = rec[rec["member"] == k].sort_values("index")
            keys = [res.basins[i][k] for i in range(len(res.strengths))]
            for i, row in enumerate(sub.itertuples(index=False)):
                nd = g.node(keys[i])
                nd.n_seen += 1
                _measured(nd, getattr(row, "test_acc", np.nan), row.train_error)
                nd.strengths.append(float(row.strength))
            by_index = {t.index: t for t in res.member_transitions(k)}
            errs = sub["train_error"].to_numpy()
            label = res.labels[k] if res.labels else str(k)
            for i in range(len(keys) - 1):
                t = by_index.get(i)
                if t is not None and t.confirmed is not False:
                    # the bisection's end models are measured too: a basin known only from them
                    # (the jump's far side between two grid points) gets their accuracy and error
                    for key, end in ((t.basin_lo, t.lo), (t.basin_hi, t.hi)):
                        _measured(g.node(key), end.get("test_acc", np.nan), end.get("train_error", np.nan))
                    e = BasinEdge(src=tuple(t.basin_lo), dst=tuple(t.basin_hi), kind="saddle" if t.saddle is not None else "jump",
                                  strength_c=t.strength_c, error_src=float(t.lo["train_error"]), error_dst=float(t.hi["train_error"]),
                                  probe=f"{name}:{label}")
                    if t.saddle is not None:
                        e.saddle_error = float(t.saddle.error)
                        e.index = int(t.saddle.index)
                        e.index_lower_bound = bool(t.saddle.index_lower_bound)
                        e.negative_eigs = " ".join(f"{v:.3g}" for v in t.saddle.negative_eigs[:5])
                    g.edges.append(e)
                    if t.excursion is not None and tuple(t.excursion.end_basin) != tuple(t.basin_hi):
                        g.node(t.excursion.end_basin)
                        g.edges.append(BasinEdge(src=tuple(t.basin_hi), dst=tuple(t.excursion.end_basin), kind="return",
                                                 strength_c=t.excursion.return_strength, probe=f"{name}:{label}"))
                elif keys[i] != keys[i + 1]:
                    g.edges.append(BasinEdge(src=tuple(keys[i]), dst=tuple(keys[i + 1]), kind="drift",
                                             strength_c=0.5 * float(res.strengths[i] + res.strengths[i + 1]),
                                             error_src=float(errs[i]), error_dst=float(errs[i + 1]), probe=f"{name}:{label}"))
    return g


def _short(key: tuple, max_len: int = 22) -> str:
    """A compact class-set label: ``{0-3,5,7-9}``."""
    if not all(isinstance(v, (int, np.integer)) for v in key):
        return basin_str(key)
    v = sorted(int(c) for c in key)
    if not v:
        return "{}"
    parts, s = [], v[0]
    prev = s
    for c in v[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(f"{s}" if s == prev else f"{s}-{prev}")
        if c is not None:
            s = prev = c
    txt = "{" + ",".join(parts) + "}"
    return txt if len(txt) <= max_len else txt[: max_len - 2] + "..}"


def draw_basin_graph(graph: BasinGraph, path: str | Path, *, title: str = "basin hierarchy") -> Path:
    """``basins.png``: :func:`phaseprobe.paths.plots.basin_graph_figure` saved at ``path``."""
    import matplotlib.pyplot as plt

    from phaseprobe.paths.plots import basin_graph_figure

    path = Path(path)
    fig = basin_graph_figure(graph, title=title)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
