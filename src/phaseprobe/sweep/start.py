"""Starting a sweep from a stored model of another sweep run (``start_from`` in the spec).

A sweep normally starts every member from a fresh initialisation. With
``start_from = {run = "DIR", branch = "up", alpha_index = k}`` each member (seed ``s``) starts
instead from the model that seed reached at grid point ``k`` of ``branch`` in the run at ``DIR``:
a fine grid over a stretch of the strength axis can then continue a coarse sweep from where it
stood, and a loop can be started in a chosen phase. The source run's spec hash is recorded in
the spec (``start_from.spec_hash``), so a resumed run refuses a source that has changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from phaseprobe.errors import SpecError

KEYS = ("run", "branch", "alpha_index", "spec_hash")
FIX = "give start_from = {run = 'DIR', branch = 'up', alpha_index = K} (a sweep run folder and one of its grid points)"


def _source(start_from: dict[str, Any]):
    from phaseprobe.runs import open_run

    unknown = sorted(set(start_from) - set(KEYS))
    if unknown:
        raise SpecError(f"start_from.{unknown[0]}: not a key of start_from (keys: run, branch, alpha_index); {FIX}")
    if "run" not in start_from or "alpha_index" not in start_from:
        raise SpecError(f"start_from: needs 'run' and 'alpha_index'; {FIX}")
    path = Path(str(start_from["run"])).expanduser()
    if not (path / "spec.json").is_file():
        raise SpecError(f"start_from.run: '{path}' is not a run folder (no spec.json); {FIX}")
    try:
        run = open_run(path)
    except Exception as e:  # a damaged spec.json
        raise SpecError(f"start_from.run: cannot open '{path}' ({e}); {FIX}") from None
    if run.kind != "sweep":
        raise SpecError(f"start_from.run: '{path}' is a {run.kind} run, not a sweep; {FIX}")
    return run


def source_hash(start_from: dict[str, Any]) -> str:
    """The spec hash of the source run (recorded so that a changed source is refused)."""
    from phaseprobe.sweep.spec import make_spec

    return make_spec(dict(_source(start_from).spec)).hash()


def check_start_from(start_from: dict[str, Any], seeds: Sequence[int]) -> None:
    """Refuse, in one line and before any compute, a ``start_from`` that cannot be loaded.

    **Arguments:**

    - `start_from`: the spec's ``start_from`` table.
    - `seeds`: the sweep's seeds; each must have a stored model at the source's grid point.

    **Returns:** nothing; raises :class:`~phaseprobe.errors.SpecError` naming the problem.
    """
    run = _source(start_from)
    want = start_from.get("spec_hash")
    if want is not None and want != source_hash(start_from):
        raise SpecError(f"start_from.run: '{start_from['run']}' has changed since this run started from it "
                        f"(spec hash {source_hash(start_from)}, recorded {want}); start a new run folder")
    try:
        ai = int(start_from["alpha_index"])
    except (TypeError, ValueError):
        raise SpecError(f"start_from.alpha_index: must be an integer grid index, got {start_from['alpha_index']!r}; {FIX}") from None
    recs = run.records
    branch = start_from.get("branch")
    sel = recs[(recs["alpha_index"] == ai) & ((recs["branch"] == branch) if branch else True)]
    if "final" in sel.columns:
        sel = sel[sel["final"].astype(bool)]
    missing = [int(s) for s in seeds if int(s) not in set(int(x) for x in sel["seed"])]
    if missing:
        raise SpecError(f"start_from: the run at '{start_from['run']}' has no stored model for seed {missing[0]} at "
                        f"branch {branch or '(default)'}, alpha_index {ai}; choose seeds it holds or another grid point")
    if "diverged" in sel.columns and sel[sel["seed"].isin(list(seeds))]["diverged"].astype(bool).any():
        raise SpecError(f"start_from: a model at branch {branch or '(default)'}, alpha_index {ai} of "
                        f"'{start_from['run']}' diverged; choose another grid point")


def with_source_hash(start_from: dict[str, Any] | None) -> dict[str, Any] | None:
    """``start_from`` with the source's spec hash recorded (unchanged when already recorded)."""
    if start_from is None or start_from.get("spec_hash") is not None:
        return start_from
    try:
        return {**start_from, "spec_hash": source_hash(start_from)}
    except SpecError:
        return start_from  # check_start_from names the problem in one line


def start_members(make_skeleton, start_from: dict[str, Any], seeds: Sequence[int]):
    """The stored models of ``seeds`` at the source's grid point, stacked as an ensemble.

    **Arguments:**

    - `make_skeleton`: ``seeds -> stacked model`` (fresh members; their structure and static
      parts are kept, their arrays replaced).
    - `start_from`: the spec's ``start_from`` table.
    - `seeds`: the members' seeds, in member order.

    **Returns:** a stacked Equinox model, member m the source's model of ``seeds[m]``.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from phaseprobe.sweep.kind import load_sweep_model

    run = _source(start_from)
    models = [load_sweep_model(run, seed=int(s), branch=start_from.get("branch"),
                               alpha_index=int(start_from["alpha_index"])) for s in seeds]
    params = [eqx.filter(m, eqx.is_inexact_array) for m in models]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *params)
    skeleton = make_skeleton(seeds)
    want = jax.tree_util.tree_structure(eqx.filter(skeleton, eqx.is_inexact_array))
    if jax.tree_util.tree_structure(stacked) != want or any(
            a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(stacked),
                                               jax.tree_util.tree_leaves(eqx.filter(skeleton, eqx.is_inexact_array)))):
        raise SpecError(f"start_from.run: the models of '{start_from['run']}' do not have this spec's architecture; "
                        "give the same model, depth, width and data as the source run")
    return eqx.combine(stacked, eqx.filter(skeleton, eqx.is_inexact_array, inverse=True))
