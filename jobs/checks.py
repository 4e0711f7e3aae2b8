"""Checks of option values shared by the probe modules' pure `check_settings` functions."""

from __future__ import annotations

import numpy as np

from pipeline.errors import LayerprobeError

# numpy's SeedSequence takes any non-negative integer, but torch's manual_seed and scikit-learn's
# random_state take at most 2**32 - 1; one range for every probe keeps a seed valid everywhere.
SEED_MAX = 2**32 - 1


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_finite_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def check_seed(seed) -> None:
    """Refuse a seed that numpy, torch or scikit-learn would reject with a traceback of their own."""
    if not is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise LayerprobeError(f"seed must be an integer in [0, 2**32 - 1 = {SEED_MAX}], got {seed!r}")
