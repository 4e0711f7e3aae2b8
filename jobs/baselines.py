"""Majority baselines shared by the probes: the floor a probe's accuracy must clear to say anything."""

from __future__ import annotations

import numpy as np


def majority(values) -> str:
    """Most frequent value (ties: the first in sorted order, so the choice never depends on order)."""
    names, counts = np.unique(np.asarray(list(values), dtype=object).astype(str), return_counts=True)
    return str(names[int(np.argmax(counts))]) if len(names) else ""


def majority_accuracy(fit_labels, eval_labels) -> float:
    """Accuracy on eval_labels of always answering the fit split's most frequent label. NaN without
    eval labels."""
    if len(eval_labels) == 0:
        return float("nan")
    return float(np.mean(np.asarray(eval_labels, dtype=object).astype(str) == majority(fit_labels)))
