"""`layerprobe export STORE --layer L --to OUT`: one layer's token vectors with token metadata.

OUT ending in `.parquet` -> a Parquet file: the tokens table's columns plus `vector`
(fixed_size_list<float32|float16>[d_model]), written shard by shard (memory stays at one shard).
Any other OUT -> a directory holding a `datasets.Dataset` (same columns) saved with save_to_disk.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import StoreError
from pipeline.sharing.common import open_store_checked, read_table, store_errors
from pipeline.store import layout


@dataclass
class ExportResult:
    out: str
    kind: str          # "parquet" or "dataset"
    n_rows: int
    d_model: int
    dtype: str


def _vectors(block: np.ndarray) -> pa.FixedSizeListArray:
    block = np.ascontiguousarray(block)
    return pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), block.shape[1])


def iter_layer_tables(st, layer: int, rows: str = "all"):
    """Yield one pa.Table per committed shard: tokens columns + `vector`."""
    if layer not in st.layers:
        raise StoreError(f"layer {layer} is not in this store (stored: {st.layers})")
    for s in st.visible_shards:
        tokens = read_table(st.fs, st.base, layout.tokens_table(s.shard_id))
        if rows == "targets":
            tokens = tokens.filter(pc.equal(tokens.column("is_target"), True))
        if tokens.num_rows == 0:
            continue
        at = tokens.column("row").to_numpy().astype(np.int64)
        if at.min() < s.row_start or at.max() >= s.row_start + s.n_rows_padded:
            raise StoreError(f"shard {s.shard_id}: tokens table rows fall outside the shard; run validate")
        yield tokens.append_column("vector", _vectors(st.array_rows(layer, at)))


def _metadata(st, layer: int, rows: str) -> dict[bytes, bytes]:
    m = st.manifest
    info = {"store": st.path, "layer": layer, "rows": rows, "model": m["model"].get("name"),
            "variant": m.get("variant"), "dtype": m.get("dtype"),
            "config_fingerprint": m.get("config_fingerprint"), "format_version": m.get("format_version")}
    return {b"layerprobe_export": json.dumps(info).encode()}


def export_layer(store: str, layer: int, out: str, *, rows: str = "all", overwrite: bool = False,
                 storage_options: dict | None = None) -> ExportResult:
    if rows not in ("all", "targets"):
        raise StoreError(f"--rows must be 'all' or 'targets', not {rows!r}")
    st = open_store_checked(store, storage_options)
    out_s = str(out)
    if os.path.lexists(out_s):
        if not overwrite:
            raise StoreError(f"export: {out_s} already exists; use --overwrite to replace it")
    d = int(st.manifest["model"]["d_model"])
    dtype = st.manifest["dtype"]
    meta = _metadata(st, layer, rows)
    n = 0
    with store_errors(store, "export from"):
        if out_s.endswith(".parquet"):
            tmp = f"{out_s}.tmp-export"
            writer = None
            try:
                for t in iter_layer_tables(st, layer, rows):
                    t = t.replace_schema_metadata({**(t.schema.metadata or {}), **meta})
                    if writer is None:
                        os.makedirs(os.path.dirname(os.path.abspath(out_s)), exist_ok=True)
                        writer = pq.ParquetWriter(tmp, t.schema, compression="zstd")
                    writer.write_table(t)
                    n += t.num_rows
                if writer is None:
                    raise StoreError(f"export: no rows to export from layer {layer} (rows={rows})")
                writer.close()
                writer = None
                _replace(tmp, out_s)
            finally:
                if writer is not None:
                    writer.close()
                if os.path.exists(tmp):
                    os.remove(tmp)
            return ExportResult(out_s, "parquet", n, d, dtype)

        import datasets

        tables = list(iter_layer_tables(st, layer, rows))
        if not tables:
            raise StoreError(f"export: no rows to export from layer {layer} (rows={rows})")
        table = pa.concat_tables(tables)
        # datasets rewrites the Arrow schema metadata on save; its DatasetInfo keeps the provenance.
        ds = datasets.Dataset(table, info=datasets.DatasetInfo(description=meta[b"layerprobe_export"].decode()))
        tmp = f"{out_s.rstrip('/')}.tmp-export"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            ds.save_to_disk(tmp)
            _replace(tmp, out_s)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ExportResult(out_s, "dataset", table.num_rows, d, dtype)


def _replace(tmp: str, out: str) -> None:
    if os.path.isdir(out) and not os.path.islink(out):
        shutil.rmtree(out)
    elif os.path.lexists(out):
        os.remove(out)
    os.replace(tmp, out)
