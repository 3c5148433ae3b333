"""R(alpha) with accuracy on a twin axis, the sweep's transitions marked."""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from phaseprobe import conventions

COLORS = {"cold": "#444444", "up": "#d62728", "down": "#1f77b4"}


def plot_curvature(geo: pd.DataFrame, records: pd.DataFrame, transitions: list[dict], out: str | Path, title: str = "") -> Path:
    conv = str(geo["convention"].iloc[0])
    factor = conventions.from_alpha(1.0, conv)
    branches = [b for b in ("cold", "up", "down") if b in set(geo["branch"])]
    fig, axes = plt.subplots(2, len(branches), figsize=(6.2 * len(branches), 7.2), squeeze=False, sharex=True)
    fin = records[records["final"]] if "final" in records.columns else records
    for j, b in enumerate(branches):
        g = geo[geo["branch"] == b].groupby("strength")
        for i, which in enumerate(("R_E", "R_L")):
            ax = axes[i][j]
            m = g[which].mean()
            s = g[which].std().fillna(0.0)
            x = m.index.to_numpy()
            ax.plot(x, m.to_numpy(), "o-", ms=3.5, color=COLORS[b], label=f"{which} (seed mean)")
            ax.fill_between(x, (m - s).to_numpy(), (m + s).to_numpy(), color=COLORS[b], alpha=0.15, lw=0)
            ax.axhline(0, color="k", lw=0.6)
            vals = np.concatenate([(m - s).to_numpy(), (m + s).to_numpy(), m.to_numpy()])
            vals = vals[np.isfinite(vals)]
            mv = m.to_numpy()[np.isfinite(m.to_numpy())]
            if mv.size and np.all(mv > 0):
                ax.set_yscale("log")
                ax.set_ylim(mv.min() / 3, mv.max() * 3)
            else:
                nz = np.abs(mv[mv != 0])
                ax.set_yscale("symlog", linthresh=max(float(nz.min()) if nz.size else 1.0, 1e-12))
                if vals.size:
                    lo, hi = float(vals.min()), float(vals.max())
                    ax.set_ylim(lo * 3 if lo < 0 else -float(nz.min() if nz.size else 1), hi * 3 if hi > 0 else 1)
            ax.set_xscale("log")
            ax.set_ylabel(("scalar curvature R of the error surface E" if which == "R_E" else "scalar curvature R of the loss surface L_alpha") + "\n(log/symlog; E = mean over samples)", fontsize=8.5)
            ax.grid(alpha=0.3)
            for t in transitions:
                if t["branch"] == b and t.get("observable") == "test_acc":
                    ax.axvline(t["alpha_c"] * factor, color="k", ls="-" if str(t["order"]).startswith("first") else "--", lw=1)
            if "test_acc" in fin.columns:
                ax2 = ax.twinx()
                acc = fin[fin["branch"] == b].groupby("strength")["test_acc"].mean()
                ax2.plot(acc.index, acc.to_numpy(), color="#2ca02c", lw=1.2, alpha=0.8)
                ax2.set_ylim(-0.02, 1.02)
                ax2.set_ylabel("test accuracy (green)", color="#2ca02c", fontsize=9)
            if which == "R_L" and "saddle_index_L_label" in geo.columns:
                # each seed's saddle index of L_alpha (">= n": a Lanczos lower bound), where any is not "0"
                labs = g["saddle_index_L_label"].agg(lambda v: " | ".join(map(str, v)))
                for xs, lab in labs.items():
                    if any(t.strip() != "0" for t in lab.split("|")):
                        ax.text(xs, 0.98, f"idx {lab}", transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                                va="top", fontsize=6.5, color="#7f3f00")
                ax.text(0.01, 0.01, "idx: saddle index of L_alpha per seed ('>= n': a Lanczos lower bound)",
                        transform=ax.transAxes, fontsize=6.5, color="#7f3f00", va="bottom", ha="left")
            if i == 0:
                ax.set_title(f"branch: {b}", fontsize=10)
            if i == 1:
                ax.set_xlabel(conventions.strength_label(conv))
    fig.suptitle((title or "curvature along the L2 path") + "   (black: accuracy transitions; solid = first order)", fontsize=10.5)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out, dpi=130)
    plt.close(fig)
    return out
