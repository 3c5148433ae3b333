"""The temperature of minibatch SGD, checked on a quadratic well.

Near a minimum ``w*`` of ``E(w) = mean_i e_i(w)`` (one parameter, per-sample curvatures ``h_i``,
``h = mean h_i``) one SGD step on a batch is ``d <- (1 - lr h_B) d - lr xi`` with ``xi`` the
minibatch gradient at ``w*`` and ``h_B`` the minibatch curvature. For a batch of ``B`` of ``n``
samples drawn without replacement ``Var(xi) = s2 c_B`` and ``Var(h_B) = v c_B`` with
``c_B = (n - B) / (B (n - 1))``, ``s2`` the per-sample gradient variance at ``w*`` and ``v`` the
per-sample curvature variance. If successive batches are independent (the well relaxes within
an epoch: ``lr h n / B >> 1``) the stationary variance is::

    Var(d) = lr^2 s2 c_B / (lr h (2 - lr h) - lr^2 v c_B)
           = T_sgd / h * 2 / (2 - lr h - lr v c_B / h),      T_sgd = lr s2 c_B / 2

that is Langevin's ``T / h`` at the temperature ``T_sgd``: proportional to ``lr / B`` at a fixed
state (for ``B << n``), with the factor ``s2 / 2`` (per direction) set by the data and the state,
a discrete-step correction ``2 / (2 - lr h)`` and, where the curvature itself fluctuates between
batches (``v > 0``), a multiplicative-noise correction that also grows with ``lr / B``. ``phaseprobe escape --noise sgd`` uses ``T = lr / B``
as the control variable; this module gives the proportionality's factor and measures it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from phaseprobe.data.base import Dataset


def sgd_temperature(lr, batch, n: int, grad_var: float):
    """``T_sgd = lr s2 (n - B) / (2 B (n - 1))``: minibatch SGD's temperature per direction (module doc).

    **Arguments:** `lr`, `batch` (scalars or arrays); `n` the training-set size; `grad_var` the
    per-sample gradient variance ``s2`` along the direction at the minimum.

    **Returns:** the temperature (same shape as ``lr / batch``).
    """
    lr = np.asarray(lr, np.float64)
    b = np.asarray(batch, np.float64)
    return lr * grad_var * (n - b) / (2.0 * b * (n - 1))


def sgd_stationary_variance(lr, batch, n: int, grad_var: float, curvature: float, curvature_var: float = 0.0):
    """Stationary variance of SGD on a quadratic well (module doc):
    ``T_sgd / h * 2 / (2 - lr h - lr v c_B / h)`` with ``v`` = `curvature_var`."""
    lr = np.asarray(lr, np.float64)
    b = np.asarray(batch, np.float64)
    c_b = (n - b) / (b * (n - 1))
    return sgd_temperature(lr, batch, n, grad_var) / curvature * 2.0 / (2.0 - lr * curvature - lr * curvature_var * c_b / curvature)


def quadratic_well_data(n: int, *, noise: float = 1.0, slope: float = 0.5, seed: int = 0, inputs: str = "sign") -> Dataset:
    """``y = slope x + noise eps`` with ``eps ~ N(0, 1)`` and ``x = +-1`` (``inputs="sign"``: every
    per-sample curvature is 1, no multiplicative noise) or ``x ~ N(0, 1)`` (``"gauss"``): a
    one-parameter model ``f = w x`` with MSE ``E = mean 1/2 (w x - y)^2`` has a quadratic well
    (the test set is a copy)."""
    rng = np.random.default_rng(seed)
    x = (rng.choice([-1.0, 1.0], size=(n, 1)) if inputs == "sign" else rng.standard_normal((n, 1))).astype(np.float32)
    y = (slope * x + noise * rng.standard_normal((n, 1))).astype(np.float32)
    return Dataset("quadratic-well", x, y, x.copy(), y.copy(), 0, task="regression", meta={"slope": slope, "noise": noise})


def measure_sgd_variance(dataset: Dataset, lrs, batch: int, *, replicas: int = 64, burn_epochs: int = 5,
                         sample_epochs: int = 20, seed: int = 0) -> dict:
    """Stationary variance of ``w`` under plain minibatch SGD on the well of ``dataset`` (model ``f = w x``).

    Every learning rate of ``lrs`` runs ``replicas`` members in one ensemble (own shuffling keys),
    started at the minimum; after ``burn_epochs`` the deviation is sampled once per epoch for
    ``sample_epochs`` epochs.

    **Returns:** a dict: ``lr`` (levels), ``variance`` (measured, per level), ``predicted``
    (:func:`sgd_stationary_variance`), ``temperature`` (:func:`sgd_temperature`), ``w_star``,
    ``curvature``, ``curvature_var``, ``grad_var``, ``n``, ``batch``, ``samples`` (per level).
    """
    from phaseprobe.models.nets import MLP, init_members
    from phaseprobe.train import TrainConfig, Trainer

    x = np.asarray(dataset.x_train, np.float64)[:, 0]
    y = np.asarray(dataset.y_train, np.float64)[:, 0]
    n = len(x)
    w_star = float(np.sum(x * y) / np.sum(x * x))
    h = float(np.mean(x * x))  # E''(w) of mean 1/2 (w x - y)^2
    v = float(np.var(x * x))  # per-sample curvature variance
    g = (w_star * x - y) * x  # per-sample gradients at the minimum (their mean is 0)
    s2 = float(np.var(g))
    lrs = np.asarray(lrs, np.float64)
    k = len(lrs) * replicas
    make = lambda key: MLP(1, 1, depth=0, width=1, bias=False, key=key)  # noqa: E731  f = w x
    members = init_members(make, jax.random.split(jax.random.PRNGKey(seed), k))
    members = jax.tree_util.tree_map(lambda a: jnp.full_like(a, w_star) if eqx.is_inexact_array(a) else a, members)
    tr = Trainer(members, dataset, TrainConfig(loss="mse", optimizer="sgd", lr=float(lrs[0]), batch_size=batch, epochs=1))
    lr_m = np.repeat(lrs, replicas).astype(np.float32)
    key = jax.random.PRNGKey(seed + 1)
    members, _, _ = tr.advance(members, burn_epochs, lr=lr_m, alpha=0.0, key=jax.random.fold_in(key, 0))
    samples = []
    for e in range(sample_epochs):
        members, _, _ = tr.advance(members, 1, lr=lr_m, alpha=0.0, key=jax.random.fold_in(key, e + 1))
        w = np.asarray(jax.tree_util.tree_leaves(eqx.filter(members, eqx.is_inexact_array))[0]).reshape(k)
        samples.append(w - w_star)
    d = np.stack(samples).reshape(sample_epochs, len(lrs), replicas)
    var = np.mean(d ** 2, axis=(0, 2))
    return {"lr": lrs, "variance": var, "predicted": sgd_stationary_variance(lrs, batch, n, s2, h, v),
            "temperature": sgd_temperature(lrs, batch, n, s2), "w_star": w_star, "curvature": h, "curvature_var": v, "grad_var": s2,
            "n": n, "batch": batch, "samples": sample_epochs * replicas}
