"""Per-dimension standardisation, shared by the probes: statistics of the fit vectors, in float64.

A dimension whose spread is under DEAD_DIMENSION of the median dimension's holds float32 rounding
noise, not signal: MiniLM's final LayerNorm has weights of ~1e-33 and -1.5e-9 on dims 127, 223 and
319, so layer 6 carries values of ~1e-7 there. Divided by its own spread, that noise would become a
unit-variance feature as large as any real one (it moved MiniLM's layer-6 WiC threshold from 0.79
to 0.67). Such dimensions are centred and not scaled: they stay ~0.
"""

from __future__ import annotations

import numpy as np

DEAD_DIMENSION = 1e-5  # of the median dimension's std: float32 rounding is ~1e-7 of a value's size


def fit_zscore(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each column of x ([n, d]), accumulated in float64 (no float64 copy of x), with
    std 1 for dead dimensions (and constant ones), so that (x - mean) / std is safe."""
    mu = x.mean(axis=0, keepdims=True, dtype=np.float64)
    sd = np.sqrt(np.mean(np.square(x - mu), axis=0, keepdims=True))
    alive = sd > max(DEAD_DIMENSION * float(np.median(sd)), 1e-12)
    return mu, np.where(alive, sd, 1.0)
