"""`layerprobe export STORE --layer L --to OUT`: one layer's token vectors with token metadata.

L is an HF hidden_states index stored in the store (0 = embedding output), or `static`: each
stored token's row of `static_embeddings` (the input-embedding table row of its `token_id`), the
layer the probes report as `static`.

OUT ending in `.parquet` -> a Parquet file: the tokens table's columns plus `vector`
(fixed_size_list<float32|float16>[d_model]), written shard by shard (memory stays at one shard).
OUT without a file extension (or ending in `/`) -> a directory holding a `datasets.Dataset` (same
columns) saved with save_to_disk. Any other extension (.csv, .json, .npy, .arrow, ...) is refused.

OUT must not be the store, inside it or contain it. An existing OUT is replaced only with
--overwrite, and only if it is what an export writes: a regular file for .parquet, or a previous
datasets export directory (dataset_info.json / state.json, nothing zarr in it) for a directory.
The new output is written beside OUT first and moved into place once complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import LayerprobeError, StoreError
from pipeline.sharing.common import is_local, open_store_checked, overlap, read_table, store_errors
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


STATIC = "static"  # --layer static: rows of the input-embedding table, as the probes name it
_SUPPORTED = "a .parquet file, or a directory (no file extension) for a datasets.Dataset"
# What a zarr store (v2 or v3) has, and a datasets save_to_disk directory never does.
_ZARR_MARKERS = {"zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata"}


def iter_layer_tables(st, layer: int | str, rows: str = "all"):
    """Yield one pa.Table per committed shard: tokens columns + `vector` (layer `static`: each
    token's static embedding row)."""
    if layer != STATIC and layer not in st.layers:
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
        if layer == STATIC:
            block = st.static_embeddings(tokens.column("token_id").to_numpy().astype(np.int64))
        else:
            block = st.array_rows(layer, at)
        yield tokens.append_column("vector", _vectors(block))


def _metadata(st, layer: int, rows: str) -> dict[bytes, bytes]:
    m = st.manifest
    info = {"store": st.path, "layer": layer, "rows": rows, "model": m["model"].get("name"),
            "variant": m.get("variant"), "dtype": m.get("dtype"),
            "config_fingerprint": m.get("config_fingerprint"), "format_version": m.get("format_version")}
    return {b"layerprobe_export": json.dumps(info).encode()}


def output_kind(out: str) -> str:
    """"parquet" or "dataset" from the --to path; any other file extension is a LayerprobeError
    (writing a datasets directory called l3.csv would surprise everyone)."""
    if out.endswith(("/", os.sep)):  # an explicit directory, whatever its name looks like
        return "dataset"
    ext = os.path.splitext(os.path.basename(out))[1]
    if ext.lower() == ".parquet":
        return "parquet"
    if ext:
        raise LayerprobeError(f"export: --to {out}: {ext} output is not supported; export writes {_SUPPORTED}")
    return "dataset"


def _is_datasets_export(path: str) -> bool:
    """A directory datasets.save_to_disk wrote (its metadata files at the top), with nothing that
    looks like a zarr store anywhere inside: only such a directory may be replaced."""
    names = set(os.listdir(path))
    if not names & {"dataset_info.json", "state.json"}:
        return False
    for _, dirs, files in os.walk(path):
        if _ZARR_MARKERS & set(files) or any(d.endswith(".zarr") for d in dirs):
            return False
    return True


def _is_parquet_export(path: str) -> bool:
    """A Parquet file this command wrote (its schema metadata names layerprobe_export): any other
    .parquet, a dataset someone extracted from among them, may not be replaced."""
    try:
        return b"layerprobe_export" in (pq.read_schema(path).metadata or {})
    except (OSError, pa.ArrowInvalid):
        return False


def _check_not_the_store(store: str, out: str) -> None:
    """Refuse an output that is the store, lies inside it or contains it: writing or replacing it
    would destroy the store (the output is always local, so a remote store cannot overlap it)."""
    if not is_local(store):
        return
    rel = overlap(store, out)
    if rel:
        what = {"is": "is the store", "is inside": "is inside the store", "contains": "contains the store"}[rel]
        raise LayerprobeError(f"export: --to {out} {what} {store}; choose an output outside it")


def _check_output(out: str, kind: str, overwrite: bool) -> None:
    """Refuse to replace anything an export did not write, and anything at all without --overwrite."""
    if not os.path.lexists(out):
        return
    if kind == "parquet":
        ours = os.path.islink(out) or (os.path.isfile(out) and _is_parquet_export(out))
        expected = "a previous layerprobe .parquet export"
    else:
        ours = os.path.islink(out) or (os.path.isdir(out) and _is_datasets_export(out))
        expected = "a previous datasets export directory (dataset_info.json / state.json, no zarr store)"
    if not ours:
        raise LayerprobeError(f"export: {out} exists and is not {expected}; --overwrite replaces only "
                              "that: remove it yourself or choose another --to")
    if not overwrite:
        raise LayerprobeError(f"export: {out} already exists; use --overwrite to replace it")


def export_layer(store: str, layer: int | str, out: str, *, rows: str = "all", overwrite: bool = False,
                 storage_options: dict | None = None) -> ExportResult:
    if rows not in ("all", "targets"):
        raise StoreError(f"--rows must be 'all' or 'targets', not {rows!r}")
    out_s = str(out)
    if not is_local(out_s):
        raise LayerprobeError(f"export: --to {out_s} is a URL; export writes a local file or directory: "
                              "export here, then upload the result")
    if "://" in out_s:  # file:// or local://: a local path
        out_s = out_s.split("://", 1)[1]
    _check_not_the_store(str(store), out_s)  # first: the most important refusal to explain
    kind = output_kind(out_s)
    if kind == "dataset":  # "d/" names the directory d: check and replace d itself
        out_s = out_s.rstrip("/" + os.sep) or out_s
    _check_output(out_s, kind, overwrite)
    st = open_store_checked(store, storage_options)
    d = int(st.manifest["model"]["d_model"])
    dtype = st.manifest["dtype"]
    meta = _metadata(st, layer, rows)
    n = 0
    with store_errors(store, "export from"):
        if kind == "parquet":
            tmp = f"{out_s}.tmp-export-{uuid.uuid4().hex[:8]}"
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
        tmp = f"{out_s}.tmp-export-{uuid.uuid4().hex[:8]}"
        try:
            ds.save_to_disk(tmp)
            _replace(tmp, out_s)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ExportResult(out_s, "dataset", table.num_rows, d, dtype)


def _replace(tmp: str, out: str) -> None:
    """Move the finished `tmp` to `out`; an old export directory is moved aside first and deleted
    only once the new one is in place (_check_output decided it may go)."""
    if os.path.isdir(out) and not os.path.islink(out):
        old = f"{out}.tmp-old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
        return
    if os.path.lexists(out) and os.path.isdir(tmp):
        os.remove(out)  # a link: os.replace cannot put a directory over it
    os.replace(tmp, out)
