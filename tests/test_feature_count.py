"""Feature counting: an L2 loop of a deep linear network on data with k distinct singular values
shows k first-order transitions, one feature each, each at the Ziyin-Ueda strength of its mode.

Derivation in the project convention (:mod:`phaseprobe.conventions`: ``L = E + alpha ||w||^2``,
``E = mean_i 1/2 ||f(x_i) - y_i||^2``). With whitened inputs (``X^T X / n = I``) and ``Y = A X``,
``A = U diag(s) V^T``, ``E = 1/2 ||W_L ... W_1 - A||_F^2``. At a minimum the layers are balanced and
aligned with ``A``'s singular vectors (``min_{prod W = M} sum ||W_l||^2 = L sum_i sigma_i(M)^(2/L)``),
so the loss splits into independent modes, ``u_i = a_i^L`` the end-to-end singular value of mode i::

    L = sum_i V(a_i; s_i),   V(a; s) = 1/2 (a^L - s)^2 + alpha L a^2.

``V'(a) = L a [a^(L-2) (a^L - s) + 2 alpha]``: a learned mode satisfies ``g(a) = a^(L-2) (s - a^L) = 2 alpha``.
For ``L >= 3`` ``g`` has a single maximum, at ``a^L = s (L-2)/(2L-2)``, so the learned minimum exists only
for ``alpha < alpha_c(s) = 1/2 g_max``; for ``L = 3``::

    a_c^3 = s / 4,   alpha_c(s) = 1/2 (s/4)^(1/3) (3 s / 4) = 3/2 (s/4)^(4/3),

where ``u`` jumps from ``s/4`` to 0 (first order: a finite jump; the origin stays a minimum on
both sides). On the upward branch of the loop (warm starts, plain gradient descent, whose fixed
points are exactly these) mode i is lost at ``alpha_c(s_i)``, largest ``s`` last: k drops of the
feature count by one. (In the weight-decay convention ``beta = 2 alpha`` this is
``beta_c = 3 (s/4)^(4/3)``, Ziyin & Ueda's / Ersoy & Wiesner's Eq. 3 for ``L = 3``.) The downward
branch stays at rank 0: for ``L >= 3`` the origin is a local minimum at every ``alpha > 0`` (lower
spinodal 0), the metastable phase ``phaseprobe escape`` measures the escape from.
"""

from __future__ import annotations

import numpy as np
import pytest

from phaseprobe.escape.features import feature_table, feature_transitions
from phaseprobe.escape.theory import critical_alpha
from phaseprobe.experiment import run_experiment
from phaseprobe.sweep.spec import make_spec

SINGULAR_VALUES = [2.0, 1.4, 1.0]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    out = tmp_path_factory.mktemp("feature_count")
    spec = make_spec(dict(
        dataset="lowrank-linear", data_options={"singular_values": SINGULAR_VALUES, "in_dim": 3, "out_dim": 3},
        n_train=32, n_test=32, model="linear", depth=3, width=4, loss="mse", alphas="0.1:1:25", mode="loop",
        seeds=1, optimizer="gd", lr=0.1, epochs=3000, grad_tol=1e-6,
    ))
    run_experiment("sweep", spec, out)
    return feature_table(out)


def test_closed_form_critical_strength():
    assert critical_alpha(1.0, 3) == pytest.approx(1.5 * 0.25 ** (4 / 3), rel=1e-12)
    for s in SINGULAR_VALUES:  # alpha_c is where the learned root of g(a) = 2 alpha disappears
        a = np.linspace(1e-6, s ** (1 / 3), 400001)
        assert 0.5 * np.max(a * (s - a ** 3)) == pytest.approx(critical_alpha(s, 3), rel=1e-8)


def test_k_singular_values_give_k_transitions_one_feature_each(loop):
    up = feature_transitions(loop, "up")
    assert len(up) == len(SINGULAR_VALUES)
    assert list(up["change"]) == [-1] * len(SINGULAR_VALUES)
    assert list(up["features_before"]) == [3, 2, 1]
    # each at the Ziyin-Ueda strength of its singular value, smallest s first (grid spacing ~10 %)
    for (_, row), s in zip(up.iterrows(), sorted(SINGULAR_VALUES)):
        assert row["alpha_before"] < critical_alpha(s, 3) <= row["alpha_after"]
    # first order: the lost singular value is still finite (>= s/4, the spinodal value) just before
    g = loop[loop["branch"] == "up"].sort_values("alpha")
    for (_, row), j in zip(up.iterrows(), (3, 2, 1)):
        before = g[g["alpha"] == row["alpha_before"]][f"sv_{j}"].item()
        after = g[g["alpha"] == row["alpha_after"]][f"sv_{j}"].item()
        assert before > sorted(SINGULAR_VALUES)[3 - j] / 4 and after < 1e-4


def test_downward_branch_stays_in_the_metastable_rank_zero_phase(loop):
    down = loop[loop["branch"] == "down"]
    assert (down["features"] == 0).all()
    assert feature_transitions(loop, "down").empty


def test_sweep_and_grok_specs_carry_the_optimiser_settings():
    """Schedule, betas and epsilon reach the trainer; at their defaults the spec hashes are the
    ones computed before these fields existed (stored runs still resume)."""
    import hashlib
    import json

    from phaseprobe.grokking.spec import GrokSpec
    from phaseprobe.sweep.run import SweepContext
    from phaseprobe.sweep.spec import OPTIMISER_DEFAULTS, SweepSpec
    from phaseprobe.train.config import TrainError

    base = dict(dataset="lowrank-linear", data_options={"singular_values": [1.0], "in_dim": 1, "out_dim": 1},
                n_train=8, n_test=8, model="linear", loss="mse", alphas="0.1,0.2")
    ctx = SweepContext(make_spec(dict(base, schedule="warmup_cosine", warmup_steps=5, decay_steps=50, end_lr_factor=0.1,
                                      b1=0.8, b2=0.98, eps=1e-7)))
    c = ctx.config
    assert (c.schedule, c.warmup_steps, c.decay_steps, c.end_lr_factor, c.b1, c.b2, c.eps) == \
        ("warmup_cosine", 5, 50, 0.1, 0.8, 0.98, 1e-7)
    with pytest.raises(TrainError, match="^decay_steps: "):
        SweepContext(make_spec(dict(base, schedule="cosine")))

    def old_hash(spec, drop):
        d = {k: v for k, v in spec.model_dump().items() if k not in drop}
        d.pop("name", None)
        if not d.get("refine"):
            d.pop("refine", None)
            d.pop("refine_to", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    assert SweepSpec().hash() == old_hash(SweepSpec(), set(OPTIMISER_DEFAULTS))
    assert SweepSpec(schedule="warmup", warmup_steps=3).hash() != SweepSpec().hash()
    g = GrokSpec()
    d = {k: v for k, v in g.model_dump().items() if k not in ("name", "eps", "schedule", "warmup_steps", "decay_steps", "end_lr_factor")}
    assert g.hash() == hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert GrokSpec(schedule="warmup", warmup_steps=10).hash() != g.hash()
