"""Optimiser assembly: every named optimiser is a *recipe* of Optax transformations.

A recipe is a function ``recipe(config, learning_rate, *, alpha, mask, ref)`` returning an
``optax.GradientTransformation``; ``learning_rate`` is a number (the member's ``lr``, a traced
value) or an Optax schedule built by :func:`make_schedule`. :func:`build_optimizer` chooses the
recipe by ``config.optimizer``, hands it the schedule and appends the noise transformation
(:func:`langevin_noise`) when ``config.noise`` asks for it. The training loop only ever calls
``build_optimizer``: a new schedule, recipe or transformation is added here.

The optimisers are built inside the traced per-member function (``lr``, ``alpha``, ``ref`` and
the temperature are data, one value per member), so nothing recompiles when they change.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from phaseprobe.train.config import TrainConfig
from phaseprobe.train.losses import tree_where

# salt folded into a member's key for its Langevin noise (its shuffles use the key itself)
NOISE_SALT = 0x1A6E


# ---- learning-rate schedules ------------------------------------------------------------------
def schedule_shape(config: TrainConfig) -> Callable[[Any], Any] | None:
    """The schedule as a multiple of the peak learning rate: ``step -> factor`` (None: constant).

    **Arguments:** ``config`` -- its ``schedule``, ``warmup_steps``, ``decay_steps`` and
    ``end_lr_factor`` (see :class:`~phaseprobe.train.TrainConfig`).

    **Returns:** an Optax schedule with peak 1, or ``None`` for ``schedule="constant"``.
    """
    s, w, d, f = config.schedule, config.warmup_steps, config.decay_steps, float(config.end_lr_factor)
    if s == "constant":
        return None
    if s == "warmup":
        return optax.linear_schedule(0.0, 1.0, w)
    if s == "cosine":
        return optax.cosine_decay_schedule(1.0, d, alpha=f)
    if s == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, 1.0, w, d, end_value=f)
    raise ValueError(f"schedule: unknown '{s}'")


def make_schedule(config: TrainConfig, lr):
    """The learning rate of one member: ``lr`` itself (constant) or ``step -> lr * shape(step)``.

    The shape is shared by the ensemble, the peak ``lr`` is the member's own (a traced value),
    so members with different learning rates follow the same schedule shape in one program.

    **Arguments:** ``config`` -- the schedule fields; ``lr`` -- the member's peak learning rate.

    **Returns:** a number (``schedule="constant"``: exactly the optimisers of a plain ``lr``) or
    an Optax schedule (a function of the step count, counted in optimiser updates).
    """
    shape = schedule_shape(config)
    if shape is None:
        return lr
    return lambda count: lr * shape(count)


# ---- transformations ------------------------------------------------------------------------
def decay_toward(rate, ref, mask) -> optax.GradientTransformation:
    """``u <- u + rate * mask * (w - w_ref)``: ``optax.add_decayed_weights`` with a centre.

    **Arguments:** ``rate`` -- the decay (``2 alpha`` for AdamW); ``ref`` -- the centre's
    parameters (``None``: 0); ``mask`` -- one 0/1 float per leaf (which leaves decay).
    """

    def init(params):
        return optax.EmptyState()

    def update(updates, state, params):
        diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
        new = jax.tree_util.tree_map(lambda u, d, m: u + (rate * m) * d if m else u, updates, diff, mask)
        return new, state

    return optax.GradientTransformation(init, update)


class LangevinState(NamedTuple):
    """The number of noisy updates made (the schedule's step for the noise amplitude)."""

    count: jax.Array


def langevin_noise(learning_rate, temperature) -> optax.GradientTransformationExtraArgs:
    """Add ``sqrt(2 * lr_t * T) * xi``, ``xi ~ N(0, I)``, to the updates (after the lr scaling).

    Chained after plain SGD (``updates = -lr_t * grad L``) this is the Euler-Maruyama step of
    overdamped Langevin dynamics, ``w <- w - lr_t * grad L + sqrt(2 lr_t T) xi``, whose
    stationary density for small ``lr`` is ``exp(-L(w) / T)``. ``L`` is the regularised loss
    of :mod:`phaseprobe.conventions` (``E`` a mean over samples, plus ``alpha ||w - w_ref||^2``),
    so ``T`` is in the units of that per-sample mean. On a quadratic ``L = k w^2 / 2`` the exact
    stationary variance of the discrete chain is ``T / (k (1 - lr k / 2))``.

    The update needs the extra argument ``noise_key`` (one PRNG key for this step; the trainer
    passes ``fold_in(fold_in(fold_in(member_key, NOISE_SALT), epoch), step)``), so the noise is
    reproducible from the member's key and continues across warm starts like its shuffles.

    **Arguments:** ``learning_rate`` -- a number or schedule (the same as the step's);
    ``temperature`` -- ``T >= 0`` (a traced per-member value).
    """

    def init(params):
        del params
        return LangevinState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, noise_key=None, **extra_args):
        del params, extra_args
        if noise_key is None:
            raise ValueError("langevin_noise: the update needs noise_key=<a PRNG key for this step>")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        scale = jnp.sqrt(2.0 * lr * temperature)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        keys = jax.random.split(noise_key, len(leaves))
        noisy = [u + (scale * jax.random.normal(k, u.shape, u.dtype)).astype(u.dtype) for u, k in zip(leaves, keys)]
        return jax.tree_util.tree_unflatten(treedef, noisy), LangevinState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_adam_guarded(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """``optax.scale_by_adam`` with the training step's guard inside it, laid out for a fast step.

    ``update(updates, state, params=None, *, guard=None)``: where ``guard`` (a scalar bool, one
    per member) is False the count and both moments are returned unchanged and the updates are
    zero, so a member whose step is refused (a NaN/inf loss or gradient) or that has stopped
    keeps its parameters and optimiser state exactly; ``guard=None`` applies every step. Where
    the guard holds, state and updates are those of ``optax.scale_by_adam(b1, b2, eps)`` (same
    state type, same operations in the same order).

    Why it exists: the moments are guarded and then materialised (``jax.lax.optimization_barrier``)
    before the update is formed from them. Without the barrier XLA recomputes the new moments
    inside the parameter update from the old ones, so the old moments must outlive their in-place
    update: on CPU the compiled training step then copied every parameter and moment once a step
    and read the gradient and moments three times (with the guard applied outside, as the
    trainer does for other optimisers). For the authors' 784-128-128-10 MLP with 16 members this
    layout is 1.2x the throughput (``benchmarks/bench_authors.py``).

    **Arguments:** ``b1``, ``b2``, ``eps`` -- as ``optax.scale_by_adam`` (``eps_root`` 0, no Nesterov).

    **Returns:** an ``optax.GradientTransformationExtraArgs`` with ``optax.ScaleByAdamState``.
    """
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def update(updates, state, params=None, *, guard=None, **extra_args):
        del params, extra_args
        keep = jnp.asarray(True) if guard is None else guard
        # optax.scale_by_adam's own steps, with the guard on the new state
        mu = tree_where(keep, optax.tree.update_moment(updates, state.mu, b1, 1), state.mu)
        nu = tree_where(keep, optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2), state.nu)
        count = jnp.where(keep, optax.safe_increment(state.count), state.count)
        mu, nu = jax.lax.optimization_barrier((mu, nu))
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        scaled = jax.tree_util.tree_map(
            lambda m, v: jnp.where(keep, m / (jnp.sqrt(v) + eps), jnp.zeros_like(m)), mu_hat, nu_hat)
        return scaled, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(base.init, update)


def guard_inside(config: TrainConfig) -> bool:
    """Whether the optimiser of ``config`` takes the step guard itself (``update(..., guard=ok)``).

    True for Adam with a constant learning rate and no noise: its recipe is
    :func:`scale_by_adam_guarded` followed by the learning rate, and no other piece of the chain
    has a state that a refused step would have to leave alone. Every other optimiser is guarded
    by the trainer, which keeps the old parameters and state with ``jnp.where`` after the update.
    """
    return config.optimizer == "adam" and config.schedule == "constant" and config.noise == "none"


# ---- recipes: named optimisers as chains of transformations --------------------------------------
def sgd_recipe(config: TrainConfig, learning_rate, *, alpha, mask, ref):
    """Plain (stochastic) gradient descent on the regularised loss: ``optax.sgd``."""
    return optax.sgd(learning_rate)


def momentum_recipe(config: TrainConfig, learning_rate, *, alpha, mask, ref):
    """Heavy-ball momentum ``config.momentum``: ``optax.sgd(..., momentum=...)``."""
    return optax.sgd(learning_rate, momentum=config.momentum)


def adam_recipe(config: TrainConfig, learning_rate, *, alpha, mask, ref):
    """Adam on the regularised loss (coupled L2): ``optax.adam`` with the config's betas and eps.

    Built as ``optax.adam`` is (the same chain and state), with :func:`scale_by_adam_guarded` in
    place of ``optax.scale_by_adam`` so that the trainer can hand it the step guard.
    """
    return optax.chain(scale_by_adam_guarded(b1=config.b1, b2=config.b2, eps=config.eps),
                       optax.scale_by_learning_rate(learning_rate))


def adamw_recipe(config: TrainConfig, learning_rate, *, alpha, mask, ref):
    """AdamW with decoupled decay ``beta = 2 alpha`` on the masked leaves, toward ``ref`` (default 0).

    ``optax.adamw``'s chain (scale_by_adam, add_decayed_weights, scale_by_learning_rate) with the
    decay generalised to a centre ``w_ref``; the penalty is not in the gradient.
    """
    return optax.chain(
        optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
        decay_toward(2.0 * alpha, ref, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


OPTIMIZER_RECIPES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd_recipe,
    "gd": sgd_recipe,  # full batch: the trainer takes one step per epoch
    "momentum": momentum_recipe,
    "adam": adam_recipe,
    "adamw": adamw_recipe,
}


def penalty_in_gradient(config: TrainConfig) -> bool:
    """Whether the L2 penalty enters the gradient (every optimiser but AdamW's decoupled decay)."""
    return config.optimizer != "adamw"


def build_optimizer(config: TrainConfig, lr, alpha, mask, ref=None, temperature=None) -> optax.GradientTransformation:
    """The optimiser of one member: its recipe with the schedule, plus noise if asked for.

    **Arguments:** ``config`` -- optimiser, schedule and noise settings; ``lr``, ``alpha`` -- the
    member's peak learning rate and canonical L2 strength; ``mask`` -- the penalty mask (one float
    per leaf); ``ref`` -- the penalty's centre (``None``: 0); ``temperature`` -- the member's
    Langevin temperature (used only with ``noise="langevin"``).

    **Returns:** an ``optax.GradientTransformation``; with ``noise="langevin"`` its update takes
    the extra argument ``noise_key``.
    """
    learning_rate = make_schedule(config, lr)
    opt = OPTIMIZER_RECIPES[config.optimizer](config, learning_rate, alpha=alpha, mask=mask, ref=ref)
    if config.noise == "langevin":
        opt = optax.chain(opt, langevin_noise(learning_rate, 0.0 if temperature is None else temperature))
    return opt


def noise_key(member_key, epoch, step):
    """The PRNG key of one member's Langevin noise at (epoch, step in the epoch)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(member_key, NOISE_SALT), epoch), step)
