"""Grokking as escape: the grokking delay against the noise at a fixed weight decay.

Read as noise-driven escape (Ersoy & Wiesner, arXiv 2606.17120), the memorising plateau is a
metastable phase and the delay ``t_test - t_train`` a first-passage time, so ``ln delay`` should
be linear in ``1 / T`` (Arrhenius) with ``T`` the noise's temperature. :func:`grok_noise_delays`
measures it on the modular task with one ensemble of ``temperatures x seeds`` members:

* ``noise = "langevin"``: full-batch gradient descent on ``E + alpha ||w||^2`` (canonical L2, the
  weight decay) plus ``sqrt(2 lr T) xi`` at every temperature (``T = 0`` members are the
  noise-free control);
* ``noise = "sgd"``: plain minibatch SGD at every learning rate of ``lrs`` with batch ``batch_size``,
  ``T = lr / batch`` (see :mod:`phaseprobe.escape.sgd` for the proportionality).

Every ``check_every`` steps each member's train and test accuracy are measured; ``t_train`` is
the first check with train accuracy ``>= train_threshold``, ``t_test`` the first with test
accuracy ``>= test_threshold``. A member that fits the training set but does not generalise
within the budget is censored at ``budget - t_train``; one that never fits is left out of the fit
(and counted). :func:`fit_grok_arrhenius` fits ``ln delay = dF / T + c`` by the censored
maximum likelihood of :func:`phaseprobe.escape.analysis.fit_arrhenius` (time in ``lr x steps``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe.errors import SpecError


def grok_noise_delays(*, temperatures: Sequence[float] = (0.0, 1e-4, 2e-4, 4e-4), lrs: Optional[Sequence[float]] = None,
                      noise: str = "langevin", batch_size: int = 32, seeds: int = 2, p: int = 23, op: str = "+",
                      train_frac: float = 0.6, data_seed: int = 0, model: str = "embed-mlp", embed_dim: int = 32,
                      depth: int = 1, width: int = 128, alpha: float = 1e-3, lr: float = 0.5, steps: int = 4000,
                      check_every: int = 50, train_threshold: float = 0.99, test_threshold: float = 0.9,
                      init_scale: float = 1.0, progress=None) -> pd.DataFrame:
    """Grokking delays of ``levels x seeds`` members trained as one ensemble (module doc).

    **Arguments:**

    - `temperatures`: Langevin temperatures (``noise="langevin"``; 0 is the noise-free control).
    - `lrs`, `batch_size`: SGD learning rates and batch (``noise="sgd"``).
    - `seeds`: initialisations per level; `p`, `op`, `train_frac`, `data_seed`: the task;
      `model`, `embed_dim`, `depth`, `width`, `init_scale`: the network.
    - `alpha`: canonical L2 strength (the weight decay, ``L = E + alpha ||w||^2``); `lr`: the
      Langevin step; `steps`: the budget (optimiser steps); `check_every`: steps between checks.
    - `progress`: optional ``callable(done_steps, total_steps)``.

    **Returns:** one row per member: ``level``, ``temperature``, ``lr``, ``seed``, ``t_train``,
    ``t_test`` (NaN if never), ``fitted``, ``generalised``, ``delay``, ``exposure_steps``
    (delay, or budget - t_train if censored), ``exposure_time`` (``lr x`` that), final accuracies.
    """
    from phaseprobe.data.modular import load_modular
    from phaseprobe.models.nets import build_model
    from phaseprobe.train import TrainConfig, Trainer

    if noise not in ("langevin", "sgd"):
        raise SpecError(f"noise: unknown '{noise}'; use langevin or sgd")
    if steps < check_every or check_every < 1:
        raise SpecError(f"steps: the budget ({steps}) must hold at least one check (check_every = {check_every})")
    ds = load_modular(p=p, op=op, train_frac=train_frac, seed=data_seed)
    if noise == "sgd":
        if lrs is None or len(lrs) < 2:
            raise SpecError("lrs: give at least two SGD learning rates")
        if batch_size >= ds.n_train:
            raise SpecError(f"batch_size: {batch_size} is not below the {ds.n_train} training pairs; lower it")
        lv = np.asarray(lrs, np.float64)
        temps = lv / batch_size
        cfg = TrainConfig(loss="ce", optimizer="sgd", lr=float(lv[0]), batch_size=batch_size, epochs=1)
    else:
        temps = np.asarray(temperatures, np.float64)
        lv = np.full(len(temps), lr)
        cfg = TrainConfig(loss="ce", optimizer="gd", lr=lr, batch_size=None, epochs=1, noise="langevin")
    if np.any(temps < 0) or not np.all(np.isfinite(temps)):
        raise SpecError("temperatures: every temperature must be a finite number >= 0")
    n_lv = len(temps)
    k = n_lv * seeds
    seed_of = np.tile(np.arange(seeds), n_lv)

    def make(key):
        return build_model(model, ds.input_shape, ds.output_dim, key=key, depth=depth, width=width,
                           init_scale=init_scale, vocab=p, embed_dim=embed_dim)

    built = [make(jax.random.PRNGKey(int(s))) for s in range(seeds)]
    members = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs) if eqx.is_array(xs[0]) else xs[0],
                                     *[built[int(s)] for s in seed_of])
    tr = Trainer(members, ds, cfg)
    spe = tr.steps_per_epoch
    lr_m = np.repeat(lv, seeds).astype(np.float32)
    t_m = np.repeat(temps, seeds).astype(np.float32)
    t_train = np.full(k, -1, np.int64)
    t_test = np.full(k, -1, np.int64)
    every = max(1, check_every // spe)
    n_checks = max(1, steps // (every * spe))
    key = jax.random.PRNGKey(12345)
    ev = None
    for c in range(n_checks):
        members, _, _ = tr.advance(members, every, lr=lr_m, alpha=alpha, key=jax.random.fold_in(key, c),
                                   temperature=(t_m if noise == "langevin" else None))
        ev = tr.evaluate(eqx.filter(members, eqx.is_inexact_array), np.full(k, alpha, np.float32), grad=False)
        now = (c + 1) * every * spe
        t_train[(t_train < 0) & (np.asarray(ev["train_acc"]) >= train_threshold)] = now
        t_test[(t_test < 0) & (np.asarray(ev["test_acc"]) >= test_threshold)] = now
        if progress is not None:
            progress(now, n_checks * every * spe)
    budget = n_checks * every * spe
    fitted = t_train >= 0
    gen = t_test >= 0
    delay = np.where(fitted & gen, np.maximum(t_test - t_train, 0), -1)
    exposure = np.where(gen, delay, np.where(fitted, budget - t_train, 0))
    return pd.DataFrame({
        "level": np.repeat(np.arange(n_lv), seeds), "temperature": np.repeat(temps, seeds), "lr": lr_m.astype(np.float64),
        "seed": seed_of, "noise": noise, "alpha": alpha, "batch_size": batch_size if noise == "sgd" else ds.n_train,
        "t_train": np.where(fitted, t_train, np.nan), "t_test": np.where(gen, t_test, np.nan), "fitted": fitted,
        "generalised": fitted & gen, "delay": np.where(delay >= 0, delay, np.nan), "exposure_steps": exposure,
        "exposure_time": exposure * lr_m.astype(np.float64), "budget_steps": budget,
        "final_train_acc": np.asarray(ev["train_acc"], np.float64), "final_test_acc": np.asarray(ev["test_acc"], np.float64),
        "final_w_sq": np.asarray(ev["w_sq"], np.float64), "check_every": every * spe,
        "criterion": f"t_train: train acc >= {train_threshold}; t_test: test acc >= {test_threshold} (checks every {every * spe} steps)",
    })


def fit_grok_arrhenius(delays: pd.DataFrame) -> dict:
    """Censored ML fit of ``ln delay = dF / T + c`` (delay in ``lr x steps``) over the members with
    ``T > 0`` that fitted the training set (module doc).

    **Returns:** :func:`phaseprobe.escape.analysis.fit_arrhenius`'s dict (NaNs where fewer than two
    generalised) plus ``members``, ``left_out_unfitted``, ``control_generalised`` / ``control_members``
    (``T = 0``) and ``control_delay_mean``.
    """
    from phaseprobe.escape.analysis import fit_arrhenius

    use = delays[(delays["temperature"] > 0) & delays["fitted"]]
    ctrl = delays[(delays["temperature"] == 0) & delays["fitted"]]
    try:
        fit = fit_arrhenius(use["temperature"], np.maximum(use["exposure_time"], 1e-12), use["generalised"])
    except ValueError:
        fit = {"dF": math.nan, "dF_lo": math.nan, "dF_hi": math.nan, "c": math.nan, "log_likelihood": math.nan,
               "events": int(use["generalised"].sum()), "censored": int((~use["generalised"]).sum()), "level": 0.95}
    fit.update(members=len(use), left_out_unfitted=int(((delays["temperature"] > 0) & ~delays["fitted"]).sum()),
               control_members=len(ctrl), control_generalised=int(ctrl["generalised"].sum()),
               control_delay_mean=float(ctrl["delay"].mean()) if ctrl["generalised"].any() else math.nan)
    return fit


def grok_delay_table(delays: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per noise level: members, fitted, generalised, and the maximum-likelihood mean delay
    ``tau = exposure / generalised`` (steps and ``lr x steps``) with its exact Poisson interval."""
    from scipy.stats import chi2

    a = (1 - level) / 2
    rows = []
    for lv, g in delays.groupby("level", sort=True):
        f = g[g["fitted"]]
        d = int(f["generalised"].sum())
        expo = float(f["exposure_steps"].sum())
        lr = float(g["lr"].iloc[0])
        tau = expo / d if d else math.inf
        lo = 2 * expo / chi2.ppf(1 - a, 2 * d + 2) if len(f) else math.nan
        hi = 2 * expo / chi2.ppf(a, 2 * d) if d else math.inf
        rows.append({"level": int(lv), "temperature": float(g["temperature"].iloc[0]), "lr": lr, "members": len(g),
                     "fitted": len(f), "generalised": d, "tau_steps": tau, "tau_lo_steps": lo, "tau_hi_steps": hi,
                     "tau": tau * lr, "tau_lo": lo * lr, "tau_hi": hi * lr,
                     "mean_t_train": float(f["t_train"].mean()) if len(f) else math.nan,
                     "budget_steps": int(g["budget_steps"].max())})
    return pd.DataFrame(rows)


def grok_escape_figure(delays: pd.DataFrame, fit: dict, path, *, title: str) -> object:
    """Two panels: members not yet generalised against steps after fitting the training set (per
    temperature) and ``ln tau`` against ``1 / T`` with the censored fit. **Returns:** the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phaseprobe.store import save_figure

    table = grok_delay_table(delays)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    cmap = plt.get_cmap("plasma")
    fitted = delays[delays["fitted"]]
    groups = list(fitted.groupby("level", sort=True))
    for j, (_, g) in enumerate(groups):
        n = len(g)
        fp = np.sort(g.loc[g["generalised"], "delay"].to_numpy(np.float64))
        end = float((g["budget_steps"] - g["t_train"]).max())
        t = np.concatenate([[0], fp, [end]])
        s = np.concatenate([[1.0], 1.0 - np.arange(1, len(fp) + 1) / n, [1.0 - len(fp) / n]])
        T = float(g["temperature"].iloc[0])
        a1.step(t, np.maximum(s, 0.5 / n), where="post", color=cmap(0.85 * j / max(len(groups) - 1, 1)),
                label=f"T = {T:.3g}{' (noise-free)' if T == 0 else ''}: {len(fp)}/{n} generalised")
    a1.set_yscale("log")
    a1.set_xlabel("steps after the training set is fitted (the delay)")
    a1.set_ylabel("fraction not yet generalised")
    a1.legend(fontsize=7)
    a1.set_title("survival on the memorising plateau (censored at the budget)", fontsize=9)
    tb = table[table["temperature"] > 0]
    x = 1.0 / tb["temperature"].to_numpy(np.float64)
    y = np.log(tb["tau"].to_numpy(np.float64))
    lo = np.log(tb["tau_lo"].to_numpy(np.float64))
    hi = np.log(tb["tau_hi"].to_numpy(np.float64))
    ok = np.isfinite(y)
    a2.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], np.where(np.isfinite(hi[ok]), hi[ok] - y[ok], 0)], fmt="o", color="k",
                label="tau = exposure / generalised (95 % Poisson interval)")
    if (~ok).any():
        a2.plot(x[~ok], lo[~ok], "^", color="0.4", label="none generalised: tau >= (95 % lower bound)")
    ctrl = table[table["temperature"] == 0]
    if len(ctrl) and np.isfinite(ctrl["tau"].iloc[0]):
        a2.axhline(np.log(ctrl["tau"].iloc[0]), color="C2", ls=":", label="noise-free control (T = 0)")
    if np.isfinite(fit.get("dF", np.nan)):
        xs = np.linspace(x.min() * 0.95, x.max() * 1.05, 50)
        a2.plot(xs, fit["dF"] * xs + fit["c"], "C0-",
                label=f"censored ML fit: dF = {fit['dF']:.3g} [{fit['dF_lo']:.3g}, {fit['dF_hi']:.3g}]")
    a2.set_xlabel("1 / T" + ("   (T = lr / batch)" if delays["noise"].iloc[0] == "sgd" else "   (Langevin temperature)"))
    a2.set_ylabel("ln tau   (mean delay in lr x steps)")
    a2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    a2.set_title("Arrhenius test of the delay" + ("" if np.isfinite(fit.get("dF", np.nan)) else
                 f": {fit.get('events', 0)} generalised, no fit (lower bounds only)"), fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.set_layout_engine("constrained")
    out = save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return out
