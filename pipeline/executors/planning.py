"""The shard plan (pure). It depends only on the data, the tokenizer and the config — never on the
number of workers — so any worker count, any retry and any resume produce the same store."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.manifest import ShardPlan, ShardRecord


def plan_shards(input_lengths: Sequence[int], kept_counts: Sequence[int], *, shard_tokens: int,
                chunk_rows: int) -> ShardPlan:
    """Cut the examples, in source order, into equal shards of at most about `shard_tokens`
    model-input tokens.

    Shards are cut by input tokens (the forward pass's work), and each shard owns a chunk-aligned row
    range sized by its *kept* tokens (all, or only targets), so no chunk is shared by two shards.
    Equal cuts rather than "full shards then a remainder": batches are length-sorted within a shard,
    so a small remainder shard pads badly (a 49-sentence tail cost 5% of a 17k-token MiniLM run).
    """
    if len(input_lengths) != len(kept_counts):
        raise ValueError("input_lengths and kept_counts differ in length")
    if not len(input_lengths):
        return ShardPlan(chunk_rows=chunk_rows, n_rows=0, shards=[])
    cum = np.cumsum(np.asarray(input_lengths, dtype=np.int64))
    total = int(cum[-1])
    n_shards = max(1, -(-total // shard_tokens))
    # Cut after the first example whose running total reaches k/n of the work; an example longer
    # than a whole share can swallow several cuts, so drop repeats.
    cuts = sorted({int(np.searchsorted(cum, k * total / n_shards)) + 1 for k in range(1, n_shards)})
    bounds = [0, *[c for c in cuts if 0 < c < len(cum)], len(cum)]
    kept_cum = np.concatenate([[0], np.cumsum(np.asarray(kept_counts, dtype=np.int64))])
    shards: list[ShardRecord] = []
    row = 0
    for start, end in zip(bounds, bounds[1:]):
        kept = int(kept_cum[end] - kept_cum[start])
        padded = -(-kept // chunk_rows) * chunk_rows
        shards.append(ShardRecord(shard_id=len(shards), example_start=start, example_end=end,
                                  row_start=row, n_tokens=kept, n_rows_padded=padded))
        row += padded
    return ShardPlan(chunk_rows=chunk_rows, n_rows=row, shards=shards)


def estimate_bytes(plan: ShardPlan, *, n_layers: int, d_model: int, itemsize: int, vocab_size: int,
                   compression_ratio: float = 1.0, table_bytes_per_token: int = 32) -> dict[str, int]:
    """Bytes on disk: hidden states per layer and in total, the static table and the Parquet tables.

    Counts real token rows: the zero rows that pad a shard's last chunk compress to almost nothing.
    """
    n_tokens = sum(s.n_tokens for s in plan.shards)
    per_layer = int(n_tokens * d_model * itemsize / compression_ratio)
    static = int(vocab_size * d_model * itemsize / compression_ratio)
    tables = n_tokens * table_bytes_per_token
    return {"per_layer": per_layer, "hidden_states": per_layer * n_layers, "static_embeddings": static,
            "tables": tables, "total": per_layer * n_layers + static + tables}
