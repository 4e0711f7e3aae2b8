"""Token-budget batching (pure)."""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group indices into batches whose padded size (n * longest) stays within `batch_tokens`.

    Indices are sorted by length, longest first (a stable sort, so the result depends only on the
    lengths): neighbours have similar lengths, so padding stays small, and the largest batch comes
    first, so an out-of-memory error shows up at once. An example longer than the budget gets a
    batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        if current and max(longest, n) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches
