"""Will a run fit in memory? An estimate made before anything is allocated.

A vectorised ensemble holds, for every member, its parameters, their gradient and the
optimiser's slots (Adam: two moments), plus the activations of one batch, plus the data on the
device. :func:`estimate_training_bytes` adds these up from shapes alone (the model is built
abstractly with ``jax.eval_shape``: no array is created); :func:`check_fits` compares the sum
with the memory available now (the accelerator's free memory when JAX runs on one, else the
host's ``MemAvailable``) and refuses a run that cannot fit with one line naming width, members,
batch and the estimate. The estimate counts only what must be resident, so it is a lower bound:
a run it refuses cannot fit; a run it passes may still be tight.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from phaseprobe.errors import PhaseprobeError

# Arrays per parameter the optimiser keeps besides the parameters and their gradient.
OPTIMIZER_SLOTS: dict[str, int] = {"adam": 2, "adamw": 2, "momentum": 1, "sgd": 0, "gd": 0}


# Estimates below this pass without asking the device (which would start JAX's backend).
SMALL_BYTES = 256 * 2**20


class ResourceError(PhaseprobeError):
    """A run that cannot fit in the memory this machine has."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training ensemble needs resident, by part (see :func:`estimate_training_bytes`)."""

    n_params: int  # per member
    members: int
    batch: int
    params: int  # parameters + gradients + optimiser slots, all members
    activations: int  # one batch's activations, all members
    data: int  # the dataset on the device

    @property
    def total(self) -> int:
        return self.params + self.activations + self.data


def params_and_activations(make_one: Callable, key=None) -> tuple[int, int]:
    """``(parameters, activations per example)`` of the model ``make_one(key)`` builds, from shapes only.

    **Arguments:**

    - ``make_one``: ``key -> model`` (an Equinox module).
    - ``key``: a PRNG key (default ``PRNGKey(0)``).

    **Returns:** the number of floating-point parameters, and the units a forward pass writes per
    example, counted as the leading (output) dimension of every weight of two or more
    dimensions (a lower bound: convolutions write that many channels at every position).
    """
    import jax

    key = jax.random.PRNGKey(0) if key is None else key
    shapes = jax.eval_shape(make_one, key)
    leaves = [x for x in jax.tree_util.tree_leaves(shapes)
              if hasattr(x, "shape") and hasattr(x, "dtype") and np.issubdtype(x.dtype, np.inexact)]
    n_params = int(sum(math.prod(x.shape) for x in leaves))
    acts = int(sum(x.shape[0] for x in leaves if len(x.shape) >= 2))
    return n_params, acts


def estimate_training_bytes(
    n_params: int,
    members: int,
    optimizer: str,
    batch: int,
    activations_per_example: int,
    data_bytes: int = 0,
    dtype_bytes: int = 4,
) -> MemoryEstimate:
    """Resident bytes of one vectorised training ensemble.

    **Arguments:**

    - ``n_params``: parameters of one member.
    - ``members``: members trained at once (one vmap).
    - ``optimizer``: a name in :data:`OPTIMIZER_SLOTS` (unknown names count no slots).
    - ``batch``: examples per step (the full training set for full batch).
    - ``activations_per_example``: units a forward pass writes per example (:func:`params_and_activations`).
    - ``data_bytes``: the dataset's arrays, resident on the device.
    - ``dtype_bytes``: bytes per number (float32: 4).

    **Returns:** a :class:`MemoryEstimate`: parameters x members x (2 + optimiser slots) +
    activations x batch x members (+ the data), in bytes.
    """
    slots = 2 + OPTIMIZER_SLOTS.get(optimizer, 0)  # parameters, gradient, optimiser state
    params = int(n_params) * int(members) * slots * dtype_bytes
    acts = int(activations_per_example) * int(batch) * int(members) * dtype_bytes
    return MemoryEstimate(n_params=int(n_params), members=int(members), batch=int(batch),
                          params=params, activations=acts, data=int(data_bytes))


def host_available_bytes() -> int | None:
    """Memory the host can give now: ``MemAvailable`` of /proc/meminfo, else ``os.sysconf``; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes() -> tuple[int | None, str]:
    """``(bytes, where)``: the free memory of JAX's default accelerator, or the host's on CPU."""
    import jax

    try:
        dev = jax.devices()[0]
        if dev.platform != "cpu":
            stats = dev.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"{dev.platform.upper()} memory"
    except Exception:  # no device query on this backend: fall back to the host
        pass
    return host_available_bytes(), "available memory"


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(est: MemoryEstimate, width: int | None = None, field: str = "width",
               available: int | None = None, where: str | None = None,
               fix: str = "make width, seeds (members per program: chunk_size) or batch_size smaller") -> MemoryEstimate:
    """Refuse (one line, :class:`ResourceError`) an ensemble whose estimate exceeds the free memory.

    **Arguments:**

    - ``est``: the estimate (:func:`estimate_training_bytes`).
    - ``width``: the model's width, named in the message.
    - ``field``: the spec field the message starts with.
    - ``available``, ``where``: the free bytes and what they are (default: measured now, see
      :func:`available_bytes`; estimates under :data:`SMALL_BYTES` pass without measuring).
    - ``fix``: what to change, the end of the message.

    **Returns:** ``est`` when it fits (or when the free memory cannot be measured).
    """
    if available is None:
        if est.total < SMALL_BYTES:
            return est  # fits any machine this runs on: no device query
        available, where = available_bytes()
    if available is None or est.total <= available:
        return est
    what = " x ".join(([f"{width}"] if width is not None else [])
                      + ([f"{est.members} members"] if est.members != 1 else [])
                      + ([f"batch {est.batch}"] if est.batch else []))
    raise ResourceError(
        f"{field}: {what} needs about {_gb(est.total)} "
        f"({est.n_params:.3g} parameters per member: {_gb(est.params)} with gradients and optimiser state, "
        f"{_gb(est.activations)} activations, {_gb(est.data)} data), more than the {_gb(available)} {where or 'available'}; {fix}"
    )
