"""The store manifest, the shard plan and the per-shard commit record (format version 1).

See schemas/FORMAT.md for where each lives in a store and how a reader with only zarr + pyarrow
uses them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_NAME = "layerprobe-store"
FORMAT_VERSION = 1


def config_fingerprint(model_hash: str, tokenizer_hash: str, source_fingerprint: str, settings: dict) -> str:
    """What a store's values depend on, as one hash: two runs with the same fingerprint write the
    same store, so a resume may continue it and anyone can recompute it from the manifest."""
    blob = json.dumps([model_hash, tokenizer_hash, source_fingerprint, settings], sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


# Manifest fields that repeat a setting at the top level for readers; they must agree with `settings`.
SETTINGS_MIRRORED = ("variant", "keep", "layers", "dtype", "chunk_rows", "codec", "max_length")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str                      # what the user passed to --model
    architecture: str              # the class AutoModel runs, e.g. BertModel, LlamaModel
    model_type: str                # config.model_type
    revision: str | None = None    # hub commit, where known
    content_hash: str              # blake2b over config and weight files
    n_layers: int                  # number of transformer blocks; hidden_states has n_layers + 1
    d_model: int
    vocab_size: int
    dtype: str                     # dtype the forward pass ran in
    gguf_file: str | None = None


class TokenizerInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    cls: str
    content_hash: str
    padding_side: str
    model_max_length: int


class SourceInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    format: str
    fingerprint: str               # blake2b over the source files' bytes (and the reader's options)
    reader_version: int = 1        # of the format's reader (pipeline/readers), also in the fingerprint
    n_examples: int
    columns: list[str]


class StoreStats(BaseModel):
    n_examples: int = 0
    n_tokens: int = 0              # real token rows
    n_rows: int = 0                # rows of hidden_states incl. the padding that aligns shards to chunks
    n_shards: int = 0
    n_truncated: int = 0           # examples cut to max_length
    n_targets_lost: int = 0        # ... whose target span lay past the cut (target_found false)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["layerprobe-store"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    created_at: str
    completed_at: str | None = None
    complete: bool = False
    config_fingerprint: str        # hash of model, tokenizer, source and the value-changing settings
    model: ModelInfo
    tokenizer: TokenizerInfo
    source: SourceInfo
    variant: str
    keep: str
    layers: list[int]              # HF hidden_states indices stored; 0 = embedding output
    dtype: str                     # stored dtype of hidden_states and static_embeddings
    chunk_rows: int
    codec: str
    max_length: int
    settings: dict = Field(default_factory=dict)  # ExtractSpec.fingerprint_fields()
    stats: StoreStats = Field(default_factory=StoreStats)
    versions: dict[str, str] = Field(default_factory=dict)
    # At completion, the commit records' written_with summed up: {"batch_tokens": {"4096": 9}, ...}
    # (one value each unless a resume changed one).
    written_with: dict[str, dict[str, int]] = Field(default_factory=dict)


class ShardRecord(BaseModel):
    """One shard of the plan: a contiguous range of source examples and the chunk-aligned range of
    hidden_states rows it owns. No other shard touches a chunk inside [row_start, row_start+n_rows_padded)."""

    shard_id: int
    example_start: int             # index into the source's examples (inclusive)
    example_end: int               # exclusive
    row_start: int                 # multiple of chunk_rows
    n_tokens: int                  # real rows written
    n_rows_padded: int             # multiple of chunk_rows (>= n_tokens)


class ShardPlan(BaseModel):
    chunk_rows: int
    n_rows: int
    shards: list[ShardRecord]

    def shard_name(self, shard_id: int) -> str:
        return shard_name(shard_id)


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}"


class CommitRecord(BaseModel):
    """Written last, after a shard's chunks and tables: its presence is what makes the shard visible.
    Checksums are crc32 of each chunk's *decoded* bytes (C order, stored dtype), so they survive a
    re-encode by `layerprobe copy` and catch both corrupt and missing chunks."""

    shard_id: int | Literal["static"]
    config_fingerprint: str
    n_tokens: int
    n_examples: int
    row_start: int
    n_rows_padded: int
    # array name -> {layer position (str) -> [crc32 per chunk, in row order]}
    chunk_crc32: dict[str, dict[str, list[int]]]
    table_sha256: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256
    written_at: str
    # How the shard was computed, where that changes float rounding but not what is stored:
    # batch_tokens, device, padding_side, attention, torch, transformers. Not in the fingerprint (a
    # resume may lower --batch-tokens after an out-of-memory error), so a store mixing them says so.
    written_with: dict[str, str | int] = Field(default_factory=dict)
