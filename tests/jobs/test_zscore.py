"""Standardisation shared by the probes: rounding noise in a dead dimension must not become a feature."""

from __future__ import annotations

import numpy as np

from jobs.zscore import fit_zscore


def test_a_dimension_holding_only_rounding_noise_stays_near_zero_while_live_ones_get_unit_spread():
    # MiniLM's layer 6 has dims whose LayerNorm weight is ~1e-9: values ~1e-7, pure float32 noise.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32) * np.array([1, 3, 0.5, 2, 1, 1], np.float32)
    x[:, 4] = rng.normal(size=500) * 1e-7  # dead
    x[:, 5] = 0.25  # constant
    mu, sd = fit_zscore(x)
    z = (x - mu) / sd
    np.testing.assert_allclose(z[:, [0, 1, 2, 3]].std(axis=0), 1.0, rtol=1e-6)
    assert np.abs(z[:, 4]).max() < 1e-5 and np.abs(z[:, 5]).max() == 0
    assert mu.dtype == np.float64 and sd.shape == (1, 6)


def test_all_identical_vectors_standardise_to_zero_without_dividing_by_zero():
    x = np.ones((4, 3), np.float32)
    mu, sd = fit_zscore(x)
    assert np.all(sd == 1.0) and np.all((x - mu) / sd == 0)
