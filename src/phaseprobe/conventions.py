"""The one loss convention of phaseprobe, written down once.

Data error ``E(w)`` (always a **mean over samples**):

* cross-entropy: ``E = mean_i [ -log softmax(f(x_i))[y_i] ]`` (natural log);
* MSE: ``E = mean_i [ 1/2 * ||f(x_i) - y_i||^2 ]`` (one half, summed over outputs).
  With whitened inputs (``X^T X / n = I``) and ``Y = A X`` this equals
  ``1/2 ||A - W_L...W_1||_F^2``, the deep-linear convention of Saxe et al.

Penalty. Internally every run stores and uses the canonical strength ``alpha``::

    L_alpha(w) = E(w) + alpha * ||w - w_ref||^2          (convention "l2")

A user may give the strength in the weight-decay convention instead::

    L_beta(w)  = E(w) + (beta / 2) * ||w - w_ref||^2     (convention "wd"),  beta = 2 alpha

which is what PyTorch's coupled ``weight_decay=beta`` inside Adam/SGD minimises. Decoupled
weight decay (AdamW) is an optimiser, not a penalty: it shrinks ``w <- w - lr*beta*w`` outside
the gradient; its records carry convention "decoupled" and report ``alpha = beta / 2`` as the
loss a coupled decay of the same beta would minimise.

Every record carries ``penalty_convention`` and the user-facing ``strength`` next to the
canonical ``alpha``. All conversions go through :func:`to_alpha` / :func:`from_alpha`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Convention = Literal["l2", "wd", "decoupled"]
CONVENTIONS: tuple[str, ...] = ("l2", "wd", "decoupled")

ERROR_REDUCTION = "mean"
MSE_HALF = True

DESCRIPTION = {
    "l2": "L = E + alpha*||w||^2",
    "wd": "L = E + (beta/2)*||w||^2, beta = 2*alpha (coupled weight decay)",
    "decoupled": "AdamW decoupled decay beta; alpha = beta/2 reported",
}


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(
            f"penalty_convention: unknown '{convention}'; use one of {', '.join(CONVENTIONS)}"
        )
    return convention


def to_alpha(strength, convention: str = "l2"):
    """User-facing strength in ``convention`` -> canonical alpha (penalty alpha*||w||^2)."""
    check_convention(convention)
    s = np.asarray(strength, dtype=np.float64)
    out = s if convention == "l2" else s / 2.0
    return float(out) if out.ndim == 0 else out


def from_alpha(alpha, convention: str = "l2"):
    """Canonical alpha -> strength in ``convention`` (beta = 2 alpha for "wd"/"decoupled")."""
    check_convention(convention)
    a = np.asarray(alpha, dtype=np.float64)
    out = a if convention == "l2" else a * 2.0
    return float(out) if out.ndim == 0 else out


def strength_label(convention: str) -> str:
    """Axis label for the strength in ``convention`` (figures say which convention)."""
    check_convention(convention)
    if convention == "l2":
        return "alpha  (L = E + alpha*||w||^2)"
    if convention == "wd":
        return "beta  (L = E + beta/2*||w||^2, coupled weight decay)"
    return "beta  (AdamW decoupled decay)"
