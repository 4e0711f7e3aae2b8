"""The shard plan (pure). It depends only on the data, the tokenizer and the config — never on the
number of workers — so any worker count, any retry and any resume produce the same store."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.manifest import ShardPlan, ShardRecord


def plan_shards(input_lengths: Sequence[int], kept_counts: Sequence[int], *, shard_tokens: int,
                chunk_rows: int) -> ShardPlan:
    """Cut the examples, in source order, into shards of about `shard_tokens` model-input tokens.

    Shards are cut by input tokens (the forward pass's work), and each shard owns a chunk-aligned row
    range sized by its *kept* tokens (all, or only targets), so no chunk is shared by two shards.
    """
    if len(input_lengths) != len(kept_counts):
        raise ValueError("input_lengths and kept_counts differ in length")
    shards: list[ShardRecord] = []
    start = 0
    row = 0
    work = kept = 0
    for i, (n_in, n_kept) in enumerate(zip(input_lengths, kept_counts)):
        work += n_in
        kept += n_kept
        if work >= shard_tokens or i == len(input_lengths) - 1:
            padded = -(-kept // chunk_rows) * chunk_rows
            shards.append(ShardRecord(shard_id=len(shards), example_start=start, example_end=i + 1,
                                      row_start=row, n_tokens=kept, n_rows_padded=padded))
            row += padded
            start, work, kept = i + 1, 0, 0
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
