"""The grokking spec: a named setup, the task, the model, and the (weight decay x init scale x
seed) grid trained as one ensemble; optional hysteresis and geometry stages.

A spec names the **setup** it follows (``setup = "omnigrok" | "nanda" | "power" | "quick"``);
the setup's preset fills every field the spec does not give, and the fields that differ
from the preset are listed as *deviations* in the records and the report, so a run never
claims a published setup it does not follow. Presets (see :data:`SETUPS` for the exact values):

* ``"omnigrok"`` -- Omnigrok-style (after Liu, Michaud & Tegmark 2023): learned token
  embeddings + MLP on ``(a + b) mod 97``, 30 % training data, full-batch AdamW, a grid over
  weight decay and the init-scale knob (large init plus weight decay groks; no weight decay
  memorises).
* ``"nanda"`` -- Nanda et al. 2023: ``p = 113``, 30 % training data, one-layer transformer
  (d_model 128, 4 heads, MLP 512, ReLU, no LayerNorm), full-batch AdamW lr 1e-3, weight decay
  1, betas (0.9, 0.98), linear warm-up over the first 10 steps, 40k steps.
* ``"power"`` -- Power et al. 2022: ``p = 97``, ``x / y``, 50 % training data, two-layer
  decoder-only transformer (width 128, 4 heads), AdamW lr 1e-3, weight decay 1, betas
  (0.9, 0.98), minibatch 512, linear warm-up over the first 10 steps, 1e5 steps.
* ``"quick"`` -- a small-``p`` rendition for tests and laptops (``p = 23``, 60 % of the pairs).

Not reproduced from the papers: the operation token of Power et al. (one operation per dataset
here).

Weight decay is AdamW's decoupled decay ``beta`` (``w <- w - lr * beta * w``); records carry
``convention = "decoupled"`` and the canonical ``alpha = beta / 2`` (:mod:`phaseprobe.conventions`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from phaseprobe.specs import SCHEDULE_DEFAULTS, ScheduleSpec, check_seeds, read_toml_spec, validation_message, without_defaults

from phaseprobe.errors import SpecError

SETUP_NAMES = ("omnigrok", "nanda", "power", "quick")
TOKEN_MODELS = ("embed-mlp", "transformer")
HYSTERESIS_MODES = ("loop", "up", "down")

SETUPS: dict[str, dict[str, Any]] = {
    "omnigrok": {
        "cite": "Omnigrok-style (after Liu, Michaud & Tegmark 2023, 'Omnigrok: grokking beyond algorithmic data'): "
                "large init scale x weight decay on an embedding MLP",
        "fields": dict(p=97, op="+", train_frac=0.3, model="embed-mlp", embed_dim=32, depth=1, width=128,
                       activation="relu", lr=3e-3, b1=0.9, b2=0.999, batch_size=None,
                       weight_decays=[0.0, 0.3, 1.0, 3.0], init_scales=[0.5, 1.0, 2.0], steps=10000),
    },
    "nanda": {
        "cite": "Nanda et al. 2023, 'Progress measures for grokking via mechanistic interpretability': "
                "p = 113, 30 % data, one-layer transformer, full-batch AdamW lr 1e-3, wd 1, betas (0.9, 0.98), "
                "10-step linear warm-up",
        "fields": dict(p=113, op="+", train_frac=0.3, model="transformer", embed_dim=128, n_heads=4, n_layers=1,
                       width=512, activation="relu", lr=1e-3, b1=0.9, b2=0.98, batch_size=None,
                       weight_decays=[1.0], init_scales=[1.0], steps=40000, schedule="warmup", warmup_steps=10),
    },
    "power": {
        "cite": "Power et al. 2022, 'Grokking: generalization beyond overfitting on small algorithmic datasets': "
                "p = 97, x/y, two-layer transformer width 128, AdamW lr 1e-3, wd 1, betas (0.9, 0.98), batch 512, "
                "10-step linear warm-up",
        "fields": dict(p=97, op="/", train_frac=0.5, model="transformer", embed_dim=128, n_heads=4, n_layers=2,
                       width=512, activation="relu", lr=1e-3, b1=0.9, b2=0.98, batch_size=512,
                       weight_decays=[1.0], init_scales=[1.0], steps=100000, schedule="warmup", warmup_steps=10),
    },
    "quick": {
        "cite": "phaseprobe's small-p rendition of the Omnigrok-style setup (p = 23, 60 % of the pairs), for tests",
        "fields": dict(p=23, op="+", train_frac=0.6, model="embed-mlp", embed_dim=32, depth=1, width=128,
                       activation="relu", lr=1e-2, b1=0.9, b2=0.999, batch_size=None,
                       weight_decays=[0.0, 3.0], init_scales=[1.0], steps=3000),
    },
}


class HysteresisSpec(BaseModel):
    """Warm-started weight-decay sweep (the sweep's continuation) on the grid's task and model.

    ``mode = "loop"`` starts from a fresh init at the smallest weight decay (where training
    memorises), walks up (the memorising branch, until it groks or collapses) and back down
    from wherever the up branch ended -- from a generalised solution, so the down branch shows
    whether and where the memorising phase comes back. ``steps_per_point`` steps at each value.
    ``tops`` runs one loop per listed top (the grid cut at that weight decay), e.g. one that
    turns back while the model still generalises and one that goes through the collapse.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    weight_decays: Union[str, list[float]] = "0.01:30:13"
    steps_per_point: int = 1000
    init_scale: float = 1.0
    seeds: Union[int, list[int]] = 1
    mode: str = "loop"
    fresh_opt: bool = False
    tops: Optional[list[float]] = None

    @field_validator("mode")
    @classmethod
    def _mode(cls, v):
        if v not in HYSTERESIS_MODES:
            raise ValueError(f"unknown mode '{v}'; use one of {', '.join(HYSTERESIS_MODES)}")
        return v

    @field_validator("steps_per_point")
    @classmethod
    def _steps(cls, v):
        if v <= 0:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @field_validator("init_scale")
    @classmethod
    def _scale(cls, v):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"must be a positive number, got {v}")
        return v


class GeometrySpec(BaseModel):
    """Geometry of the memorising plateau vs the generalised solution of one grid member.

    The member is the one with ``weight_decay``/``init_scale``/``seed`` (default: the member
    with the longest finite grokking delay). The plateau point is re-trained to the geometric
    mean of its train-fit and test-fit steps; the generalised point is its final state; with
    ``include_memoriser`` the final state of the same init at weight decay 0 (if on the grid)
    is added. Models up to ``max_params`` get exact Hessians, larger ones Lanczos/Hutchinson.
    ``float64`` evaluates the geometry in double precision (inside a local x64 context): the
    memorising end points are nearly flat (eigenvalues ~1e-7), where float32 rounding would
    blur the sign of the smallest eigenvalues. ``neg_eigs_E`` counts eigenvalues of ``H_E`` below
    ``-neg_eigs_E_tol`` (relative to its spectrum's scale): over the whole spectrum when exact,
    else among the ``lanczos_k`` bottom Ritz values, shown ``">= n"`` when only a lower bound
    (raise ``lanczos_k`` to count further).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    weight_decay: Optional[float] = None
    init_scale: Optional[float] = None
    seed: Optional[int] = None
    include_memoriser: bool = True
    max_params: int = 5000
    n_probes: int = 64
    lanczos_k: int = 5
    float64: bool = True

    @field_validator("max_params", "lanczos_k")
    @classmethod
    def _pos(cls, v):
        if v <= 0:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @field_validator("n_probes")
    @classmethod
    def _probes(cls, v):
        if v < 2:
            raise ValueError(f"needs >= 2 probes for a standard error, got {v}")
        return v


class GrokSpec(ScheduleSpec):
    """A grokking experiment (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "grok"
    setup: str = "omnigrok"
    # task
    p: int = 97
    op: str = "+"
    train_frac: float = 0.3
    data_seed: int = 0
    # model
    model: str = "embed-mlp"
    embed_dim: int = 32
    depth: int = 1
    width: int = 128
    n_heads: int = 4
    n_layers: int = 1
    activation: str = "relu"
    init: str = "torch"
    embed_std: float = 1.0
    bias: bool = True
    # grid: one ensemble over weight_decays x init_scales x seeds
    weight_decays: list[float] = [0.0, 0.3, 1.0, 3.0]
    init_scales: list[float] = [1.0]
    seeds: Union[int, list[int]] = 1
    # optimiser (AdamW, decoupled decay)
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    batch_size: Optional[int] = None
    steps: int = 10000
    n_records: int = 60
    chunk_size: int = 64
    pieces_per_chunk: int = 10
    """Each chunk's training is stored in this many stretches of steps (cut at record steps): a
    killed run loses at most one stretch. The numbers do not depend on it."""
    # phases
    train_threshold: float = 0.99
    test_threshold: float = 0.95
    memorise_below: float = 0.5
    # stages
    hysteresis: HysteresisSpec = HysteresisSpec()
    geometry: GeometrySpec = GeometrySpec()

    @field_validator("setup")
    @classmethod
    def _setup(cls, v):
        if v not in SETUP_NAMES:
            raise ValueError(f"unknown setup '{v}'; use one of {', '.join(SETUP_NAMES)}")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v):
        if v not in TOKEN_MODELS:
            raise ValueError(f"unknown token model '{v}'; use one of {', '.join(TOKEN_MODELS)}")
        return v

    @field_validator("embed_dim", "width", "n_heads", "n_layers", "steps", "n_records", "chunk_size", "pieces_per_chunk")
    @classmethod
    def _pos(cls, v):
        if v <= 0:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @field_validator("depth")
    @classmethod
    def _depth(cls, v):
        if v < 0:
            raise ValueError(f"must be >= 0 hidden layers, got {v}")
        return v

    @field_validator("lr", "embed_std")
    @classmethod
    def _posf(cls, v):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"must be a positive number, got {v}")
        return v

    @field_validator("b1", "b2")
    @classmethod
    def _beta(cls, v):
        if not (0.0 <= v < 1.0):
            raise ValueError(f"Adam's decay rate must be in [0, 1), got {v}")
        return v

    @field_validator("train_threshold", "test_threshold", "memorise_below")
    @classmethod
    def _acc(cls, v):
        if not (0.0 < v <= 1.0):
            raise ValueError(f"an accuracy threshold must be in (0, 1], got {v}")
        return v

    @field_validator("weight_decays")
    @classmethod
    def _wds(cls, v):
        if not v:
            raise ValueError("the list is empty; give at least one weight decay, e.g. [0, 1]")
        if any(not (math.isfinite(x) and x >= 0) for x in v):
            raise ValueError("every weight decay must be finite and >= 0")
        return v

    @field_validator("init_scales")
    @classmethod
    def _scales(cls, v):
        if not v:
            raise ValueError("the list is empty; give at least one init scale, e.g. [1]")
        if any(not (math.isfinite(x) and x > 0) for x in v):
            raise ValueError("every init scale must be a positive number")
        return v

    # ---- derived ---------------------------------------------------------------------------
    def seed_list(self) -> list[int]:
        """The seeds: distinct non-negative Python ints (a count ``n`` means ``0 .. n-1``)."""
        return check_seeds(self.seeds, example="[0, 1]")

    def model_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"vocab": self.p, "embed_dim": self.embed_dim, "embed_std": self.embed_std}
        if self.model == "transformer":
            opts.update(n_heads=self.n_heads, n_layers=self.n_layers)
        return opts

    def setup_cite(self) -> str:
        return SETUPS[self.setup]["cite"]

    def deviations(self) -> dict[str, tuple[Any, Any]]:
        """Fields that differ from the named setup's preset: name -> (preset, this spec)."""
        out = {}
        for k, v in SETUPS[self.setup]["fields"].items():
            mine = getattr(self, k)
            if isinstance(v, list) or isinstance(mine, list):
                same = list(map(float, v)) == list(map(float, mine))
            else:
                same = v == mine
            if not same:
                out[k] = (v, mine)
        return out

    def hash(self) -> str:
        d = without_defaults(self.model_dump(), SCHEDULE_DEFAULTS)
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def grid_hash(self) -> str:
        """Hash of the fields the grid's numbers depend on (stages excluded), for resuming."""
        d = without_defaults(self.model_dump(), SCHEDULE_DEFAULTS)
        for k in ("name", "hysteresis", "geometry", "train_threshold", "test_threshold", "memorise_below",
                  "pieces_per_chunk"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def check(self) -> "GrokSpec":
        """Everything checkable without compute: the data options, the model, the grid."""
        from phaseprobe.data.modular import check_op, is_prime
        from phaseprobe.models.nets import ACTIVATIONS, INIT_SCHEMES

        if self.p < 2:
            raise SpecError(f"p: {self.p} is too small; give a modulus p >= 2 (97 is the standard task)")
        try:
            self.op = check_op(self.op)
        except Exception as e:  # DataError -> SpecError with the same one-line message
            raise SpecError(str(e)) from None
        if self.op == "/" and not is_prime(self.p):
            raise SpecError(f"p: {self.p} is not prime, so '/' is undefined; use a prime p such as 97")
        if not 0.0 < self.train_frac < 1.0:
            raise SpecError(f"train_frac: {self.train_frac} is outside (0, 1); give the training fraction, e.g. 0.3")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"activation: unknown '{self.activation}'; use one of {', '.join(ACTIVATIONS)}")
        if self.init not in INIT_SCHEMES or self.init == "gaussian":
            raise SpecError(f"init: unknown '{self.init}'; use one of torch, lecun, he")
        if self.model == "transformer" and self.embed_dim % self.n_heads:
            raise SpecError(f"embed_dim: {self.embed_dim} is not divisible by n_heads={self.n_heads}; pick a multiple")
        if self.batch_size is not None and self.batch_size <= 0:
            raise SpecError(f"batch_size: must be a positive integer (omit it for full batch), got {self.batch_size}")
        if self.memorise_below > self.test_threshold:
            raise SpecError(f"memorise_below: {self.memorise_below} is above test_threshold={self.test_threshold}; make it smaller")
        self.seed_list()
        g = self.geometry
        for name, val, grid in (("weight_decay", g.weight_decay, self.weight_decays),
                                ("init_scale", g.init_scale, self.init_scales), ("seed", g.seed, self.seed_list())):
            if val is not None and not np.any(np.isclose(np.asarray(grid, float), float(val))):
                raise SpecError(f"geometry.{name}: {val} is not on the grid ({', '.join(f'{v:g}' for v in grid)}); "
                                "pick a value from the spec's grid or leave it out")
        if self.hysteresis.enabled:
            from phaseprobe.sweep.spec import parse_strength_grid

            check_seeds(self.hysteresis.seeds, "hysteresis.seeds", example="[0, 1]")
            grid = parse_strength_grid(self.hysteresis.weight_decays, field="hysteresis.weight_decays")
            if len(grid) < 2:
                raise SpecError("hysteresis.weight_decays: a sweep needs at least two values, e.g. '0.01:30:13'")
            for top in self.hysteresis.tops or []:
                if np.sum(grid <= top * (1 + 1e-9)) < 2:
                    raise SpecError(f"hysteresis.tops: {top} leaves fewer than two grid values below it; pick a top inside the grid")
        return self


    def check_with_data(self, dataset, make_one) -> "GrokSpec":
        """The checks that need the task's data: the grid's memory, estimated from shapes alone.

        **Arguments:**

        - ``dataset``: the modular-arithmetic dataset.
        - ``make_one``: ``key -> model`` for this spec.

        **Returns:** ``self``; a grid that cannot fit in the free memory raises a one-line
        :class:`~phaseprobe.resources.ResourceError` before any model is built.
        """
        from phaseprobe.resources import check_fits, params_and_activations, estimate_training_bytes

        n_params, acts = params_and_activations(make_one)
        members = len(self.weight_decays) * len(self.init_scales) * len(self.seed_list())
        batch = dataset.n_train if self.batch_size is None else min(self.batch_size, dataset.n_train)
        est = estimate_training_bytes(n_params, members, "adamw", batch, acts,
                                      data_bytes=sum(int(np.asarray(a).nbytes) for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)))
        check_fits(est, width=self.width, fix="make width, embed_dim, or the grid (weight_decays x init_scales x seeds) smaller")
        return self


def make_grok_spec(data: dict | None = None) -> GrokSpec:
    """Validate a spec dict: the named setup's preset, overridden by the given fields."""
    data = dict(data or {})
    setup = data.get("setup", "omnigrok")
    if setup not in SETUPS:
        raise SpecError(f"setup: unknown '{setup}'; use one of {', '.join(SETUP_NAMES)}")
    merged = {**SETUPS[setup]["fields"], **data, "setup": setup}
    try:
        return GrokSpec(**merged).check()
    except ValidationError as e:
        raise SpecError(validation_message(e, "grok", "examples/grok*.toml")) from None


def load_grok_file(path: str | Path) -> dict:
    """Read a TOML spec (a ``[grok]`` table, or the top level)."""
    return read_toml_spec(path, "grok", "examples/grok*.toml")


# The embedded default of `phaseprobe grok`: small enough to grok, sweep and measure on two CPU
# cores in a few minutes (p = 47 instead of the setup's 97; both listed as deviations).
DEFAULT_GROK_SPEC: dict[str, Any] = {
    "name": "grok-default",
    "setup": "omnigrok",
    "p": 47,
    "train_frac": 0.5,
    "weight_decays": [0.0, 0.75, 1.5, 3.0, 6.0],
    "init_scales": [0.5, 1.0, 2.0],
    "steps": 4000,
    "hysteresis": {"enabled": True, "weight_decays": "0.1:30:8", "steps_per_point": 800, "init_scale": 1.0,
                   "tops": [6.0, 30.0]},
    "geometry": {"enabled": True},
}
