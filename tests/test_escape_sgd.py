"""Minibatch SGD's temperature: on a quadratic well the stationary variance is T_sgd / h with
T_sgd = lr s2 (n - B) / (2 B (n - 1)) -- proportional to lr / B (phaseprobe.escape.sgd)."""

import numpy as np
import pytest

from phaseprobe.escape.sgd import measure_sgd_variance, quadratic_well_data, sgd_stationary_variance, sgd_temperature


def test_sgd_temperature_is_proportional_to_lr_over_batch():
    t = sgd_temperature(np.array([0.1, 0.2, 0.1]), np.array([4, 8, 8]), 10_000, 2.0)
    assert t[0] == pytest.approx(2 * t[2], rel=1e-3) and t[1] == pytest.approx(t[0], rel=1e-3)
    # full batch: no minibatch noise at all
    assert sgd_temperature(0.1, 100, 100, 2.0) == 0.0
    # Langevin's T / h for small steps and no curvature noise
    assert sgd_stationary_variance(1e-4, 4, 10_000, 2.0, 3.0) == pytest.approx(sgd_temperature(1e-4, 4, 10_000, 2.0) / 3.0, rel=1e-3)


def test_sgd_stationary_variance_on_a_quadratic_well():
    """Measured Var(w) under plain SGD (the trainer's, per-epoch reshuffling) at two learning rates
    and two batch sizes against lr s2 (n - B) / (2 B (n - 1)) / h * 2 / (2 - lr h): within 20 %
    (480 samples per level: a 6.5 % standard error). A temperature lr / sqrt(B) would be 2x off
    between the batch sizes, lr alone 4x."""
    ds = quadratic_well_data(400, seed=1)
    ratios = {}
    for batch in (2, 8):
        r = measure_sgd_variance(ds, [0.3, 0.6], batch, replicas=48, burn_epochs=2, sample_epochs=10, seed=3)
        assert r["curvature"] == pytest.approx(1.0) and r["curvature_var"] == pytest.approx(0.0, abs=1e-9)
        np.testing.assert_allclose(r["variance"], r["predicted"], rtol=0.2)
        ratios[batch] = r["variance"] * batch / r["lr"]
    # Var * B / lr is the same at both batch sizes up to the (n - B) / (n - 1) and 2 / (2 - lr h) factors
    corr = (398 / 399) / (392 / 399)
    np.testing.assert_allclose(ratios[2] / ratios[8], corr, rtol=0.25)
