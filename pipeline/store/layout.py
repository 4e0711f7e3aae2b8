"""Names inside a store (format version 1; schemas/FORMAT.md is the prose version).

    STORE.zarr/
      zarr.json                         root group; attributes["layerprobe"] = the manifest
      hidden_states/                    [layer, row, hidden] chunks (1, chunk_rows, hidden)
      layer/                            [layer] int32: the HF hidden_states index of each stored layer
      static_embeddings/                [vocab, hidden]: the input-embedding table
      meta/zarr.json                    an empty group, so zarr/xarray listings stay clean
      meta/plan.json                    ShardPlan
      meta/tables/tokens/shard-NNNNN.parquet
      meta/tables/examples/shard-NNNNN.parquet
      meta/commits/shard-NNNNN.json     CommitRecord, written last: the shard is visible once it exists
      meta/commits/static.json
"""

from schemas.manifest import shard_name

MANIFEST_ATTR = "layerprobe"
HIDDEN = "hidden_states"
LAYER_COORD = "layer"
STATIC = "static_embeddings"
META = "meta"
PLAN = "meta/plan.json"
COMMITS = "meta/commits"
DIMS_HIDDEN = ("layer", "row", "hidden")
DIMS_STATIC = ("vocab", "hidden")


def tokens_table(shard_id: int) -> str:
    return f"meta/tables/tokens/{shard_name(shard_id)}.parquet"


def examples_table(shard_id: int) -> str:
    return f"meta/tables/examples/{shard_name(shard_id)}.parquet"


def commit_record(shard_id: int | str) -> str:
    name = shard_id if isinstance(shard_id, str) else shard_name(shard_id)
    return f"{COMMITS}/{name}.json"


def default_chunk_rows(d_model: int, itemsize: int) -> int:
    # ~4 MiB uncompressed per chunk (a power of two, 64..8192 rows). Zarr's per-chunk cost is what
    # competes with the forward pass for the CPU: 4 MiB chunks cut the writer's CPU time by ~40% vs
    # 1 MiB (benchmarks/README.md), while a chunk stays small next to a layer (MiniLM: 2048 tokens).
    rows = (4 << 20) // (d_model * itemsize)
    p = 64
    while p * 2 <= rows and p < 8192:
        p *= 2
    return p
