"""The sweep spec: one validated description of an alpha sweep (TOML file or CLI flags).

Every field is checked *before any compute*; a bad value raises :class:`SpecError` with one
line naming the field and the fix. ``spec_hash`` identifies the numbers a spec produces (it
ignores fields that do not change them: ``out``, ``engine``, progress), so rerunning the same
spec in the same folder resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_serializer, model_validator

from phaseprobe import conventions
from phaseprobe.errors import SpecError
from phaseprobe.specs import (  # noqa: F401 (apply_overrides re-exported)
    SCHEDULE_DEFAULTS,
    ScheduleSpec,
    apply_overrides,
    check_seeds,
    read_toml_spec,
    validation_message,
    without_defaults,
)

MODES = ("cold", "up", "down", "loop")
OPTIMISER_DEFAULTS = {"b1": 0.9, "b2": 0.999, **SCHEDULE_DEFAULTS}
"""The optimiser settings (Adam's betas and epsilon, the learning-rate schedule of
:class:`phaseprobe.train.TrainConfig`) at the values that reproduce runs made before they existed."""


def parse_strength_grid(text: Union[str, list, tuple], field: str = "alphas") -> np.ndarray:
    """Parse a grid of strengths.

    * ``"1e-5:1e-1:41"`` -- 41 log-spaced values from 1e-5 to 1e-1 (both ends > 0);
    * ``"lin:0:0.145:330"`` -- 330 linearly spaced values (may start at 0, the unregularised point);
    * ``"0,0.001,0.01"`` or a list of numbers -- exactly those values (0 allowed).

    Strength 0 (no penalty) is a legitimate point of a linear grid or a list; only a log range
    needs positive ends. Negative or non-finite strengths are refused.

    **Arguments:**

    - ``text``: the grid, as above.
    - ``field``: the spec field it came from (``alphas``, ``strengths``, ...), named in errors.

    **Returns:** the values as a float64 array, in the order given.
    """
    if isinstance(text, (list, tuple, np.ndarray)):
        try:
            vals = np.asarray([float(v) for v in text], dtype=np.float64)
        except (ValueError, TypeError):
            raise SpecError(f"{field}: {list(text)!r} is not a list of numbers; give e.g. [0.001, 0.01, 0.1]") from None
    else:
        s = str(text).strip()
        try:
            if s.startswith("lin:"):
                a, b, n = s[4:].split(":")
                vals = np.linspace(float(a), float(b), int(n))
            elif ":" in s:
                a, b, n = s.split(":")
                a, b, n = float(a), float(b), int(n)
                if a <= 0 or b <= 0:
                    lin = f", or 'lin:0:{b:g}:{n}' for a linear grid that starts at 0" if a == 0 and b > 0 else ""
                    raise SpecError(f"{field}: a log range needs positive ends, got '{s}'; give both ends > 0, e.g. '1e-4:1:25'{lin}")
                vals = np.geomspace(a, b, n)
            else:
                vals = np.asarray([float(v) for v in s.split(",") if v.strip()], dtype=np.float64)
        except SpecError:
            raise
        except (ValueError, TypeError):
            raise SpecError(
                f"{field}: cannot read '{s}'; write a log range '1e-5:1e-1:41', a linear range 'lin:0:0.1:51' or a list '0.001,0.01'"
            ) from None
    if vals.size == 0:
        raise SpecError(f"{field}: the grid is empty; give at least one value, e.g. '1e-5:1e-1:41'")
    if not np.all(np.isfinite(vals)) or np.any(vals < 0):
        bad = next(float(v) for v in vals if not (np.isfinite(v) and v >= 0))
        raise SpecError(f"{field}: strength {bad:g} is not allowed; every strength must be finite and >= 0 (0 = no penalty)")
    return vals


class DataModelSpec(BaseModel):
    """The data and model fields every spec that trains networks shares (sweep, connect, basins)."""

    model_config = ConfigDict(extra="forbid")

    # data
    dataset: str = "digits"
    classes: Optional[Union[int, list[int]]] = None
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    normalize: Optional[str] = None
    data_dir: Optional[str] = None
    data_seed: int = 0
    data_options: dict[str, Any] = {}
    # model
    model: str = "mlp"
    depth: int = 2
    width: int = 64
    activation: str = "relu"
    bias: bool = True
    init: str = "torch"
    init_scale: float = 1.0
    gamma: Optional[float] = None
    sigma: Optional[float] = None
    model_options: dict[str, Any] = {}
    # a researcher's own model, FILE.py:FUNCTION (model = "file"); its content hash is part of the spec
    model_file: Optional[str] = None
    model_file_hash: Optional[str] = None
    loss: str = "ce"

    @model_validator(mode="before")
    @classmethod
    def _model_file_fields(cls, data):
        """``model_file`` made absolute, ``model`` = "file" unless given, the file's hash recorded."""
        if isinstance(data, dict) and data.get("model_file"):
            from phaseprobe.models.user import model_file_hash, resolve_model_file
            from phaseprobe.models.nets import ModelError

            data = dict(data)
            data.setdefault("model", "file")
            try:
                data["model_file"] = resolve_model_file(data["model_file"])
                if data.get("model_file_hash") is None:
                    data["model_file_hash"] = model_file_hash(data["model_file"])
            except ModelError:
                pass  # check() names the problem in one line
        return data

    @model_serializer(mode="wrap")
    def _drop_unused_model_file(self, handler):
        """Without a model file its two fields are left out (older specs and their hashes unchanged)."""
        d = handler(self)
        if isinstance(d, dict) and d.get("model_file") is None and d.get("model_file_hash") is None:
            d.pop("model_file", None)
            d.pop("model_file_hash", None)
        if isinstance(d, dict) and "start_from" in d and d["start_from"] is None:
            d.pop("start_from")  # a fresh start: spec.json as before
        return d


DATA_MODEL_FIELDS = tuple(DataModelSpec.model_fields)


class SweepSpec(DataModelSpec, ScheduleSpec):
    """An alpha sweep. Strengths are given in ``convention`` ("l2": alpha*||w||^2, "wd": beta/2*||w||^2).

    The class defaults are the values older runs were made with (their spec hashes depend on
    them); ``phaseprobe sweep`` with no flags and :func:`phaseprobe.spec_for` /
    :func:`phaseprobe.alpha_sweep` start from the command's embedded default
    (:data:`DEFAULT_SPEC`) instead. Build one with :func:`make_spec` (checked) rather than
    the bare constructor.

    **Arguments:** (the main fields; every field is a keyword)

    - `dataset`, `classes`, `n_train`, `data_options`: the data (``"npz"`` with
      ``data_options = {"path": FILE}`` for one's own arrays).
    - `model`, `depth`, `width`, `activation`, `model_file`: the network (``model_file =
      "FILE.py:FUNCTION"`` for one's own model).
    - `alphas`: the strength grid (``"1e-3:0.3:25"`` log, ``"lin:0:0.1:51"``, or a list).
    - `convention`: ``"l2"``, ``"wd"`` or ``"decoupled"``.
    - `mode`: ``"cold"``, ``"up"``, ``"down"`` or ``"loop"``.
    - `seeds`: a count or a list of seeds.
    - `optimizer`, `lr`, `batch_size`, `epochs`, `patience`: the training per strength.
    - `refine`, `refine_to`: bisect the transitions found on the grid.
    """

    name: str = "sweep"
    # penalty and grid
    alphas: Union[str, list[float]] = "1e-4:1:25"
    convention: str = "l2"
    penalty_on: str = "all"
    # sweep
    mode: str = "loop"
    seeds: Union[int, list[int]] = 3
    # training
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    batch_size: Optional[int] = None
    epochs: int = 300
    patience: Optional[int] = None
    min_delta: float = 0.0
    grad_tol: Optional[float] = None
    fresh_opt: bool = True
    record_every: Optional[int] = None
    # analysis
    converged_grad_tol: float = 1e-3
    learned_class_acc: float = 0.5
    # adaptive refinement of the transitions found on the grid (:mod:`phaseprobe.sweep.refine`)
    refine: bool = False
    refine_to: Union[float, str] = "2%"
    # start every member from a stored model of another sweep run instead of a fresh init
    # (:mod:`phaseprobe.sweep.start`): {run = "DIR", branch = "up", alpha_index = k}
    start_from: Optional[dict[str, Any]] = None
    # execution
    chunk_size: int = 64

    @field_validator("mode")
    @classmethod
    def _mode(cls, v):
        if v not in MODES:
            raise ValueError(f"unknown mode '{v}'; use one of {', '.join(MODES)}")
        return v

    @field_validator("convention")
    @classmethod
    def _conv(cls, v):
        if v not in ("l2", "wd", "decoupled"):
            raise ValueError(f"unknown convention '{v}'; use 'l2' (alpha*||w||^2) or 'wd' (beta/2*||w||^2)")
        return v

    @field_validator("depth")
    @classmethod
    def _depth(cls, v):
        if v < 0:
            raise ValueError(f"must be >= 0 hidden layers (>= 1 weight matrix for model 'linear'), got {v}")
        return v

    @field_validator("width", "epochs", "chunk_size")
    @classmethod
    def _pos(cls, v):
        if v <= 0:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @field_validator("record_every")
    @classmethod
    def _record_every(cls, v):
        if v is not None and v <= 0:
            raise ValueError(f"must be a positive number of epochs (omit it to record only the end), got {v}")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"must be a positive number, got {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _start_from_hash(cls, data):
        """``start_from`` gets its source run's spec hash recorded (a changed source is refused)."""
        if isinstance(data, dict) and isinstance(data.get("start_from"), dict):
            from phaseprobe.sweep.start import with_source_hash

            data = {**data, "start_from": with_source_hash(data["start_from"])}
        return data

    # ---- derived --------------------------------------------------------------------------
    def seed_list(self) -> list[int]:
        """The seeds: distinct non-negative Python ints (a count ``n`` means ``0 .. n-1``)."""
        return check_seeds(self.seeds)

    def strengths(self) -> np.ndarray:
        return np.sort(parse_strength_grid(self.alphas))

    def alpha_grid(self) -> np.ndarray:
        """Canonical alphas (penalty alpha*||w||^2), ascending."""
        return np.asarray(conventions.to_alpha(self.strengths(), self.convention), dtype=np.float64).reshape(-1)

    def hash(self) -> str:
        d = without_defaults(self.model_dump(), OPTIMISER_DEFAULTS)  # optimiser settings added later
        d.pop("name", None)  # a label; chunk_size stays: it sets the members per compiled program
        if not d.get("refine"):  # without refinement its settings change no number (older hashes stay)
            d.pop("refine", None)
            d.pop("refine_to", None)
        if d.get("start_from") is None:  # a fresh start (every older spec) hashes as before
            d.pop("start_from", None)
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check(self) -> "SweepSpec":
        """Validate everything that can be validated without data (grid, seeds, names)."""
        self.alpha_grid()
        self.seed_list()
        from phaseprobe.models.nets import ACTIVATIONS, INIT_SCHEMES, MODELS
        from phaseprobe.train.trainer import LOSSES, OPTIMIZERS

        if self.model_file is not None or self.model == "file":
            check_model_file_fields(self.model, self.model_file)
        elif self.model not in MODELS:
            raise SpecError(f"model: unknown '{self.model}'; use one of {', '.join(MODELS)}")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"activation: unknown '{self.activation}'; use one of {', '.join(ACTIVATIONS)}")
        if self.init not in INIT_SCHEMES:
            raise SpecError(f"init: unknown '{self.init}'; use one of {', '.join(INIT_SCHEMES)}")
        if self.optimizer not in OPTIMIZERS:
            raise SpecError(f"optimizer: unknown '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise SpecError(f"loss: unknown '{self.loss}'; use one of {', '.join(LOSSES)}")
        if self.model != "file":
            check_model_options(self.model, self.model_options)
        if self.model == "linear" and self.depth < 1:
            raise SpecError(f"depth: a deep linear net needs depth >= 1 weight matrices, got {self.depth}")
        if self.convention == "decoupled" and self.optimizer != "adamw":
            raise SpecError("convention: 'decoupled' is AdamW's decay; set optimizer = 'adamw' or use convention 'wd'")
        if self.optimizer == "adamw" and self.convention != "decoupled":
            raise SpecError("optimizer: 'adamw' decays outside the gradient; set convention = 'decoupled' so records say so")
        if self.patience is not None and self.patience < 1:
            raise SpecError(f"patience: must be >= 1 epoch, got {self.patience}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise SpecError(f"batch_size: must be a positive integer (omit it for full batch), got {self.batch_size}")
        if self.start_from is not None:
            from phaseprobe.sweep.start import check_start_from

            check_start_from(self.start_from, self.seed_list())
        self.refine_target()
        return self

    def refine_target(self) -> tuple[str, float]:
        """``refine_to`` read: ``("relative", r)`` for ``"2%"`` (bracket width below r x alpha) or
        ``("absolute", w)`` for a number (bracket width below w, in the spec's convention)."""
        v = self.refine_to
        fix = "give a relative width '2%' or an absolute strength width such as 0.0005"
        try:
            if isinstance(v, str) and v.strip().endswith("%"):
                kind, x = "relative", float(v.strip()[:-1]) / 100.0
            else:
                kind, x = "absolute", float(v)
        except (TypeError, ValueError):
            raise SpecError(f"refine_to: cannot read {v!r}; {fix}") from None
        if not (math.isfinite(x) and x > 0):
            raise SpecError(f"refine_to: must be > 0, got {v!r}; {fix}")
        if kind == "relative" and x >= 1:
            raise SpecError(f"refine_to: a relative width must be below 100 %, got {v!r}; {fix}")
        return kind, x


    def check_with_data(self, dataset, make_one=None) -> "SweepSpec":
        """The checks that need the loaded data (before the model is built or anything trained).

        **Arguments:**

        - ``dataset``: the loaded :class:`~phaseprobe.data.base.Dataset`.
        - ``make_one``: ``key -> model`` for this spec and data; when given, the ensemble's
          memory is estimated from shapes alone and refused above the free memory
          (:func:`phaseprobe.resources.check_fits`).

        **Returns:** ``self``; a batch larger than the training set or an ensemble that cannot
        fit raises a one-line :class:`~phaseprobe.errors.PhaseprobeError`.
        """
        from phaseprobe.resources import check_fits, params_and_activations, estimate_training_bytes

        n = int(dataset.n_train)
        if self.batch_size is not None and self.batch_size > n:
            raise SpecError(f"batch_size: {self.batch_size} is larger than the training set ({n} examples); "
                            f"give batch_size <= {n}, or omit it for full batch")
        if make_one is not None:
            n_params, acts = params_and_activations(make_one)
            est = estimate_training_bytes(
                n_params, self.members_per_program(), self.optimizer,
                n if (self.batch_size is None or self.optimizer == "gd") else self.batch_size, acts,
                data_bytes=sum(int(np.asarray(a).nbytes) for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)),
            )
            check_fits(est, width=self.width)
        return self

    def members_per_program(self) -> int:
        """Members trained together in one vectorised program (at most ``chunk_size``)."""
        n_seeds = len(self.seed_list())
        cells = n_seeds * len(self.alpha_grid()) if self.mode == "cold" else n_seeds
        return min(self.chunk_size, cells)


# Options the built-in models take in ``model_options`` (registered models check their own).
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {"mlp": (), "linear": (), "conv": ("channels",)}


def check_model_file_fields(model: str, model_file: Optional[str]) -> None:
    """``model = "file"`` goes with ``model_file = FILE.py:FUNCTION`` (an existing file)."""
    from phaseprobe.models.user import model_file_hash, split_model_file

    if model_file is None:
        raise SpecError("model: 'file' needs model_file = 'FILE.py:FUNCTION' (--model-file); give it or pick a built-in model")
    if model != "file":
        raise SpecError(f"model: '{model}' and model_file both given; drop --model (model = 'file' goes with --model-file)")
    split_model_file(model_file)
    model_file_hash(model_file)


def check_model_options(model: str, options: dict) -> None:
    """Refuse a ``model_options`` key the model does not take (it would be ignored in silence)."""
    if model not in MODEL_OPTIONS:
        return  # a registered builder (embed-mlp, transformer, ...) refuses unknown keys itself
    known = MODEL_OPTIONS[model]
    for k in options:
        if k not in known:
            takes = f"'{model}' takes {', '.join(known)}" if known else f"'{model}' takes none"
            raise SpecError(f"model_options.{k}: not an option of model '{model}' ({takes}); remove it or check its spelling")


def make_spec(data: dict) -> SweepSpec:
    try:
        return SweepSpec(**data).check()
    except ValidationError as e:
        raise SpecError(validation_message(e, "sweep")) from None


def load_spec_file(path: str | Path) -> dict:
    """A sweep spec file: its ``[sweep]`` table or its top level."""
    return read_toml_spec(path, "sweep")


# The embedded default of `phaseprobe sweep` (no flags): digits, an MLP with two hidden layers,
# a loop sweep (up then down, warm-started) across the onset-of-learning transition.
DEFAULT_SPEC: dict = {
    "name": "digits-onset-loop",
    "dataset": "digits",
    "model": "mlp",
    "depth": 2,
    "width": 64,
    "activation": "relu",
    "alphas": "1.5e-3:0.15:31",
    "convention": "l2",
    "mode": "loop",
    "seeds": 3,
    "optimizer": "adam",
    "lr": 3e-3,
    "batch_size": 128,
    "epochs": 40,
    "patience": None,
}
# Why minibatches of 128 for 40 epochs, not full batch: with two hidden layers w = 0 is a local
# minimum of L_alpha for every alpha > 0 and the data term's gradient vanishes there, so a
# full-batch down branch started in the trivial phase never leaves it and the loop stays open
# (examples/digits_open_loop.toml). Minibatch noise, rescaled by Adam, lets the down branch
# return at alpha ~ 0.003-0.005: both spinodals and the Maxwell point lie inside the grid. The
# grid's step (x1.166) puts a point in the metastable stretch between the Maxwell point and the
# up-branch jump, so the regularised losses are seen to cross.


def fit_default_batch(data: dict) -> tuple[dict, Optional[str]]:
    """The embedded default's minibatch, dropped (full batch) where the training set is smaller.

    Only the default's own ``batch_size`` is adjusted: call this when ``data`` started from
    :data:`DEFAULT_SPEC` and the user did not choose a batch. The training-set size is read from
    ``n_train`` or from an ``.npz`` file's ``y_train`` (``--data``) without loading the images.

    **Arguments:**

    - ``data``: the spec dict so far (the default with the user's flags applied).

    **Returns:** ``(data, note)``: the dict (a copy with ``batch_size = None`` when the set is
    smaller than one default batch) and a one-line note saying so, or ``None``.
    """
    batch = data.get("batch_size")
    if batch is None:
        return data, None
    n = data.get("n_train")
    path = (data.get("data_options") or {}).get("path") if data.get("dataset") == "npz" else None
    if n is None and path:
        try:
            with np.load(path, mmap_mode="r") as z:
                n = int(z["y_train"].shape[0])
        except Exception:  # the data loader reports a bad file with its own one-line message
            return data, None
    if n is None or int(n) >= int(batch):
        return data, None
    note = (f"batch_size: the default minibatch ({batch}) is larger than the training set ({n} examples); "
            f"training full batch (give --batch to choose)")
    return {**data, "batch_size": None}, note
