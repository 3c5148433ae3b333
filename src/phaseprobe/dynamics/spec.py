"""The ``dln`` spec: validated before any compute, one-line errors, three experiment kinds.

A spec is a plain dict (TOML file, the embedded default, ``--set`` overrides)::

    name = "dln"
    depth = 3                     # weight matrices L
    width = 16
    gamma = 4.0                   # init variance sigma^2 = width^-gamma (or give sigma = ...)
    seed = 1                      # init draws
    [teacher]                     # whitened low-rank linear teacher y = T x
    singular_values = [4, 2, 1, 0.5]
    in_dim = 6
    out_dim = 6
    seed = 0
    [integrate]                   # see phaseprobe.dynamics.run
    t_max = 2000.0
    step = "adaptive"
    [plateaus]
    slope_tol = 0.1
    min_decades = 0.05
    certify = true
    [grid]                        # the gamma x width phase diagram (--phase-diagram)
    gammas = [0.25, 0.5, ...]
    widths = [16, 32, ...]
    seeds = [0, 1]
    [escape]                      # escape times against the init scale (--escape)
    depths = [2, 3]

:class:`DLNSpec` (one network, kind ``dln``), :class:`DLNPhaseGridSpec` (kind ``dln-grid``: the
grid's widths are checked instead of the single run's) and :class:`DLNEscapeSpec` (kind
``dln-escape``) are built from that dict as keyword arguments (``DLNSpec(**data)``) and give it
back, defaults filled in, from ``model_dump()``, so ``type(spec)(**spec.model_dump())`` is the
same spec. The runs themselves are in :mod:`phaseprobe.dynamics.kind`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from typing import ClassVar

import numpy as np

from phaseprobe.dynamics.phase import PhaseGridSpec, escape_sigmas, sigma_of
from phaseprobe.dynamics.run import IntegrateConfig
from phaseprobe.dynamics.teacher import DynamicsError, check_singular_values, make_teacher

DEFAULT_DLN_SPEC: dict = {
    "name": "dln",
    "depth": 3,
    "width": 16,
    "gamma": 4.0,
    "sigma": None,
    "seed": 1,
    "teacher": {"singular_values": [4.0, 2.0, 1.0, 0.5], "in_dim": 6, "out_dim": 6, "seed": 0, "basis": "random"},
    "integrate": {"t_max": 2000.0, "step": "adaptive", "lr": None, "c": 0.5, "delta": 0.01, "chunk": 16, "loss_tol": 1e-6},
    "plateaus": {"slope_tol": 0.1, "min_decades": 0.05, "certify": True, "hess_rel_tol": 0.1},
    "grid": {
        "gammas": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
        "widths": [16, 32, 64, 128, 256],
        "seeds": [0, 1],
        "depth": 3,
        "t_max": 3000.0,
        "loss_tol": 1e-4,
    },
    "escape": {"depths": [2, 3], "width": 16, "seed": 0, "sigmas_depth2": None, "sigmas_depth3": None},
}

_TOP = {"name", "depth", "width", "gamma", "sigma", "seed", "teacher", "integrate", "plateaus", "grid", "escape"}
_ESCAPE = {"depths", "width", "seed", "sigmas_depth2", "sigmas_depth3"}
_TEACHER = {"singular_values", "in_dim", "out_dim", "seed", "basis", "n_train"}
_INTEGRATE = {"t_max", "step", "lr", "c", "delta", "chunk", "loss_tol", "grow", "n_records", "rank_tol", "max_steps"}
_PLATEAUS = {"slope_tol", "min_decades", "certify", "hess_rel_tol"}
_GRID = {"gammas", "widths", "seeds", "depth", "t_max", "loss_tol"}


def _err(msg: str):
    raise DynamicsError(msg)


def _check_keys(d: dict, allowed: set, where: str):
    if not isinstance(d, dict):
        _err(f"{where}: must be a table of settings, got {type(d).__name__}")
    bad = sorted(set(d) - allowed)
    if bad:
        _err(f"{where}{'.' if where else ''}{bad[0]}: unknown setting; use one of {', '.join(sorted(allowed))}")


def _int(v, field: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (isinstance(v, float) and float(v).is_integer()):
        _err(f"{field}: must be an integer, got {v!r}")
    v = int(v)
    if v < lo:
        _err(f"{field}: must be an integer >= {lo}, got {v}")
    return v


def _num(v, field: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        _err(f"{field}: must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        _err(f"{field}: must be finite, got {v}")
    if positive and v <= 0:
        _err(f"{field}: must be > 0, got {v}")
    return v


def _list(v, field: str, conv) -> list:
    if isinstance(v, str):
        try:
            v = [x for x in v.split(",") if x.strip()]
            v = [conv(x) for x in v]
        except ValueError:
            _err(f"{field}: cannot read '{v}'; give a list like [1, 2, 3] or '1,2,3'")
    if not isinstance(v, (list, tuple)) or len(v) == 0:
        _err(f"{field}: must be a non-empty list, got {v!r}")
    return list(v)


def _check_dln_memory(depth: int, width: int, teacher: dict, field: str) -> None:
    """Refuse a network whose parameters and gradient alone exceed the free memory (shapes only)."""
    from phaseprobe.resources import check_fits, estimate_training_bytes

    i, o = teacher["in_dim"], teacher["out_dim"]
    n_params = i * o if depth == 1 else i * width + (depth - 2) * width * width + width * o
    n = teacher.get("n_train") or 0
    est = estimate_training_bytes(n_params, 1, "gd", n, depth * width, data_bytes=4 * n * (i + o))
    check_fits(est, width=width, field=field, fix="make the width (or the depth) smaller")


def _validate(data: dict, *, grid: bool = False) -> dict:
    """The validated fields of a spec dict (defaults filled in); one-line errors, no compute."""
    d = json.loads(json.dumps(DEFAULT_DLN_SPEC))
    _check_keys(data, _TOP, "")
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    _check_keys(d["teacher"], _TEACHER, "teacher")
    _check_keys(d["integrate"], _INTEGRATE, "integrate")
    _check_keys(d["plateaus"], _PLATEAUS, "plateaus")
    _check_keys(d["grid"], _GRID, "grid")
    _check_keys(d["escape"], _ESCAPE, "escape")
    te = d["teacher"]
    te["in_dim"] = _int(te["in_dim"], "teacher.in_dim")
    te["out_dim"] = _int(te["out_dim"], "teacher.out_dim")
    te["seed"] = _int(te["seed"], "teacher.seed", 0)
    if te.get("n_train") is not None:
        te["n_train"] = _int(te["n_train"], "teacher.n_train")
    sv = [_num(x, "teacher.singular_values") for x in _list(te["singular_values"], "teacher.singular_values", float)]
    try:
        check_singular_values(sv, te["in_dim"], te["out_dim"])
    except DynamicsError as e:
        _err(f"teacher.{e}")
    te["singular_values"] = sv
    rank = len(sv)
    depth = _int(d["depth"], "depth")
    width = _int(d["width"], "width")
    seed = _int(d["seed"], "seed", 0)
    gamma = None if d.get("gamma") is None else _num(d["gamma"], "gamma")
    sigma = None if d.get("sigma") is None else _num(d["sigma"], "sigma", positive=True)
    if not grid:
        if depth > 1 and width < rank:
            _err(f"width: {width} is below the teacher's rank {rank}; use width >= {rank} (or fewer singular values)")
        if sigma is None and gamma is None:
            _err("gamma: give gamma (sigma^2 = width^-gamma) or sigma")
        if sigma is None:
            sigma = sigma_of(gamma, width)
    if not grid:
        _check_dln_memory(depth, width, te, "width")
    it = d["integrate"]
    try:
        icfg = IntegrateConfig(
            t_max=_num(it["t_max"], "integrate.t_max", positive=True), step=str(it["step"]),
            lr=None if it.get("lr") is None else _num(it["lr"], "integrate.lr", positive=True),
            c=_num(it["c"], "integrate.c", positive=True), delta=_num(it["delta"], "integrate.delta", positive=True),
            chunk=_int(it["chunk"], "integrate.chunk"), loss_tol=_num(it["loss_tol"], "integrate.loss_tol", positive=True),
            keep_params=True,
            **{k: it[k] for k in ("grow", "n_records", "rank_tol", "max_steps") if k in it},
        ).validate()
    except DynamicsError as e:
        msg = str(e)
        _err(msg if msg.startswith("integrate.") else f"integrate.{msg}")
    pl = d["plateaus"]
    pl["slope_tol"] = _num(pl["slope_tol"], "plateaus.slope_tol", positive=True)
    pl["min_decades"] = _num(pl["min_decades"], "plateaus.min_decades", positive=True)
    pl["hess_rel_tol"] = _num(pl["hess_rel_tol"], "plateaus.hess_rel_tol", positive=True)
    if not isinstance(pl["certify"], bool):
        _err(f"plateaus.certify: must be true or false, got {pl['certify']!r}")
    g = d["grid"]
    gammas = [_num(x, "grid.gammas") for x in _list(g["gammas"], "grid.gammas", float)]
    widths = [_int(x, "grid.widths") for x in _list(g["widths"], "grid.widths", int)]
    seeds = [_int(x, "grid.seeds", 0) for x in _list(g["seeds"], "grid.seeds", int)]
    for fld, vals in (("grid.gammas", gammas), ("grid.widths", widths)):
        twice = [x for x in vals if vals.count(x) > 1]
        if twice:
            _err(f"{fld}: {twice[0]:g} is given {vals.count(twice[0])} times; give each value once, e.g. {sorted(set(vals))}")
    dup = sorted({x for x in seeds if seeds.count(x) > 1})
    if dup:
        _err(f"grid.seeds: seed {dup[0]} is given {seeds.count(dup[0])} times (the same training twice); give each seed once, e.g. {sorted(set(seeds))}")
    gdepth = _int(g["depth"], "grid.depth", 2)
    if grid:
        _check_dln_memory(gdepth, max(widths), te, "grid.widths")
    if grid:
        small = [w for w in widths if w < rank]
        if small:
            _err(f"grid.widths: width {small[0]} is below the teacher's rank {rank}; use widths >= {rank}")
    gspec = PhaseGridSpec(
        gammas=tuple(gammas), widths=tuple(widths), seeds=tuple(seeds), depth=gdepth,
        integrate=replace(icfg, t_max=_num(g["t_max"], "grid.t_max", positive=True),
                          loss_tol=_num(g["loss_tol"], "grid.loss_tol", positive=True), keep_params=False),
        slope_tol=pl["slope_tol"], min_decades=pl["min_decades"],
    )
    es = d["escape"]
    edepths = [_int(x, "escape.depths", 2) for x in _list(es["depths"], "escape.depths", int)]
    if len(set(edepths)) < len(edepths):
        twice = next(x for x in edepths if edepths.count(x) > 1)
        _err(f"escape.depths: depth {twice} is given {edepths.count(twice)} times; give each depth once, e.g. {sorted(set(edepths))}")
    ewidth = _int(es["width"], "escape.width")
    if ewidth < rank:
        _err(f"escape.width: {ewidth} is below the teacher's rank {rank}; use escape.width >= {rank}")
    esig = {}
    for L in (2, 3):
        v = es.get(f"sigmas_depth{L}")
        if v is not None:
            esig[L] = [_num(x, f"escape.sigmas_depth{L}", positive=True) for x in _list(v, f"escape.sigmas_depth{L}", float)]
    escape = {"depths": edepths, "width": ewidth, "seed": _int(es["seed"], "escape.seed", 0), "sigmas": esig}
    return dict(raw=d, name=str(d.get("name", "dln")), depth=depth, width=width, sigma=float(sigma) if sigma else float("nan"),
                gamma=gamma, seed=seed, teacher=te, integrate=icfg, plateaus=pl, grid=gspec, escape=escape)


class DLNSpec:
    """A validated ``dln`` spec: one network (see the module doc).

    Built from the spec dict as keyword arguments, ``DLNSpec(depth=3, teacher={...})`` (missing
    settings take their defaults); every bad value is a one-line
    :class:`~phaseprobe.dynamics.teacher.DynamicsError` raised here, before any compute.

    **Attributes:** ``name``, ``depth``, ``width``, ``sigma`` (from ``gamma`` when not given),
    ``gamma``, ``seed``, ``teacher`` (dict), ``integrate`` (:class:`~phaseprobe.dynamics.run.IntegrateConfig`),
    ``plateaus`` (dict), ``grid`` (:class:`~phaseprobe.dynamics.phase.PhaseGridSpec`), ``escape``
    (dict), ``raw`` (the whole dict, defaults filled in).
    """

    phase_grid: ClassVar[bool] = False
    """Validate for the gamma x width grid (its widths) instead of the single network."""
    model_fields: ClassVar[dict] = {k: None for k in sorted(_TOP)}
    """The top-level spec fields (what ``--grid field=...`` and ``--set`` may name)."""
    nested_fields: ClassVar[tuple] = ("teacher", "integrate", "plateaus", "grid", "escape")
    """The sections whose settings a spec grid may name with a dot (``--grid grid.depth=2,3``)."""

    def __init__(self, **data):
        for k, v in _validate(data, grid=self.phase_grid).items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, hash={self.hash()})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.raw == self.raw

    @classmethod
    def model_validate(cls, data: dict) -> "DLNSpec":
        """The spec of a plain dict (as ``cls(**data)``)."""
        return make_dln_spec(data, grid=cls.phase_grid, escape=issubclass(cls, DLNEscapeSpec))

    def hash(self) -> str:
        """A digest of the whole spec (defaults filled in)."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]

    spec_hash = hash

    def check(self) -> None:
        """Nothing left to check: every field was validated when the spec was built."""

    def model_dump(self) -> dict:
        """The spec as a plain dict (a copy; ``type(self)(**spec.model_dump())`` rebuilds it)."""
        return json.loads(json.dumps(self.raw))

    def data(self):
        """The teacher data set (whitened low-rank linear teacher)."""
        t = self.teacher
        return make_teacher(t["singular_values"], t["in_dim"], t["out_dim"], t.get("n_train"), seed=t["seed"], basis=t["basis"])

    def escape_sigmas(self, depth: int) -> list[float]:
        """The init scales of the escape-time ensemble at ``depth``."""
        return escape_sigmas(depth, self.escape["sigmas"].get(depth))


class DLNPhaseGridSpec(DLNSpec):
    """A ``dln`` spec for the gamma x width phase diagram (kind ``dln-grid``): the grid's widths
    must reach the teacher's rank; the single network's fields are not checked."""

    phase_grid: ClassVar[bool] = True


class DLNEscapeSpec(DLNSpec):
    """A ``dln`` spec for escape times against the init scale (kind ``dln-escape``)."""


def make_dln_spec(data: dict, *, grid: bool = False, escape: bool = False) -> DLNSpec:
    """Validate a spec dict (defaults filled in); one-line errors, no compute.

    **Arguments:**

    - `data`: the spec dict (see the module doc).
    - `grid`: for the gamma x width phase diagram (:class:`DLNPhaseGridSpec`).
    - `escape`: for the escape times (:class:`DLNEscapeSpec`).

    **Returns:** the validated spec.
    """
    if not isinstance(data, dict):
        raise DynamicsError(f"spec: must be a table of settings, got {type(data).__name__}")
    bad = sorted(k for k in data if not isinstance(k, str))
    if bad:
        raise DynamicsError(f"{bad[0]}: unknown setting; use one of {', '.join(sorted(_TOP))}")
    cls = DLNPhaseGridSpec if grid else DLNEscapeSpec if escape else DLNSpec
    return cls(**data)


def load_dln_file(path) -> dict:
    """A ``dln`` spec file (TOML) as a dict; one-line errors for a missing or unreadable file."""
    from phaseprobe.errors import SpecError
    from phaseprobe.specs import read_toml_spec

    try:
        return read_toml_spec(path, "dln", "examples/dln*.toml")
    except SpecError as e:
        _err(str(e))
