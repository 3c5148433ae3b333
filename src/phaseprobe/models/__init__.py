"""Models as Equinox modules (pytrees). Each maps ONE example to its output; batch with vmap.

* :class:`MLP` -- depth (hidden layers), width, activation, bias on/off, named init scheme.
* :class:`DeepLinear` -- ``f(x) = W_L ... W_1 x``, width w, init variance ``sigma^2 = w^-gamma``.
* :class:`ConvNet` -- a small conv net for image data.

Init schemes (``init=``), applied to every Linear/Conv weight ``W`` with fan-in ``n``:

* ``"torch"``: ``U(-1/sqrt(n), 1/sqrt(n))`` for weights **and** biases -- PyTorch's default for
  ``nn.Linear``/``nn.Conv2d`` (kaiming_uniform with a=sqrt(5)), so published PyTorch setups
  match;
* ``"lecun"``: ``N(0, 1/n)``, biases 0;  ``"he"``: ``N(0, 2/n)``, biases 0;
* ``"gaussian"``: ``N(0, sigma^2)`` with the given ``sigma`` on every weight, biases 0.

``init_scale`` multiplies every parameter after init (the large-init knob of grokking).

A researcher's own model comes from a file (:mod:`phaseprobe.models.user`, ``--model-file
FILE.py:FUNCTION``): an Equinox module (held as an :class:`OwnModule`) or an ``(init, apply)``
pair (a :class:`FunctionalModel`).
"""

from phaseprobe.models.nets import (
    ACTIVATIONS,
    INIT_SCHEMES,
    ConvNet,
    DeepLinear,
    MLP,
    ModelError,
    build_model,
    count_params,
    init_members,
    penalty_mask,
)
from phaseprobe.models import tokens  # noqa: F401  (registers embed-mlp, transformer)
from phaseprobe.models.user import FunctionalModel, OwnModule, build_user_model

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "ConvNet",
    "DeepLinear",
    "FunctionalModel",
    "MLP",
    "ModelError",
    "OwnModule",
    "build_model",
    "build_user_model",
    "count_params",
    "init_members",
    "penalty_mask",
]
