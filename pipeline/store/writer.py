"""Writing a store: create it, then each shard writes its own chunk-aligned rows and commits.

Concurrency contract: a shard owns rows [row_start, row_start + n_rows_padded) of hidden_states,
a chunk-aligned range, so no two shards ever touch the same chunk, and every chunk is written whole
(never a partial-chunk read-modify-write). A retried shard rewrites identical chunks and tables, then
its commit record: writes are idempotent. Readers see a shard only once its commit record exists.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import queue
import threading
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.errors import ZarrUserWarning

from pipeline.errors import StoreError
from pipeline.store import layout
from pipeline.store.chunk_files import ChunkFiles
from pipeline.store.fs import url_to_fs, join, write_bytes_atomic, write_json
from schemas.manifest import CommitRecord, Manifest, ShardPlan, ShardRecord

log = logging.getLogger(__name__)

FLOAT16_MAX = float(np.finfo(np.float16).max)
# Casting rounds to nearest even: below 65520 (half a float16 step above 65504) a value rounds to
# ±65504, from 65520 on it becomes inf. The check refuses exactly what the cast would turn into inf.
FLOAT16_OVERFLOW = 65520.0


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def compressors_for(codec: str):
    if codec == "blosc-lz4":
        # lz4 with bit shuffle: on MiniLM activations 9% smaller than byte shuffle (fp32: 1.26x vs
        # 1.15x raw) at the same write speed, and faster to decode (benchmarks/README.md).
        return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    if codec == "zstd":
        return zarr.codecs.ZstdCodec(level=3)
    if codec == "none":
        return None
    raise ValueError(f"unknown codec {codec!r}")


def open_group(path: str, mode: str, storage_options: dict | None = None, attributes: dict | None = None) -> zarr.Group:
    return zarr.open_group(store=path, mode=mode, storage_options=storage_options or None,
                           zarr_format=3, attributes=attributes)


def create_store(path: str, manifest: Manifest, plan: ShardPlan, *, d_model: int, vocab_size: int,
                 storage_options: dict | None = None) -> None:
    """Create the manifest (complete=False), the arrays, then the plan. Nothing is visible yet.

    The manifest goes into the very first zarr.json: a run killed at any point after it leaves a
    folder that says it is layerprobe's, which the next run may replace (no plan.json yet: creation
    was interrupted, see extract_job.check_out), never an anonymous Zarr group it must refuse."""
    root = open_group(path, "w", storage_options,
                      attributes={layout.MANIFEST_ATTR: manifest.model_dump(mode="json")})
    dtype = np.dtype(manifest.dtype)
    compressors = compressors_for(manifest.codec)
    cfg = {"write_empty_chunks": True}  # every chunk is a file, so `validate` can tell missing from zero
    root.create_array(
        layout.HIDDEN, shape=(len(manifest.layers), plan.n_rows, d_model),
        chunks=(1, plan.chunk_rows, d_model), dtype=dtype, fill_value=0,
        dimension_names=layout.DIMS_HIDDEN, compressors=compressors, config=cfg,
        attributes={"description": "hidden states, HF hidden_states indexing (see layer)",
                    "stored_dtype": manifest.dtype, "model_dtype": manifest.model.dtype},
    )
    coord = root.create_array(layout.LAYER_COORD, shape=(len(manifest.layers),), dtype="int32",
                              dimension_names=("layer",), compressors=None)
    coord[:] = np.asarray(manifest.layers, dtype=np.int32)
    root.create_array(
        # The static table is read whole or by token id, independently of the token rows, so its
        # chunks take the ~4 MiB default for its dtype whatever --chunk-rows says.
        layout.STATIC, shape=(vocab_size, d_model),
        chunks=(min(vocab_size, layout.default_chunk_rows(d_model, dtype.itemsize)), d_model),
        dtype=dtype, fill_value=0, dimension_names=layout.DIMS_STATIC, compressors=compressors,
        config=cfg, attributes={"description": "input-embedding table (static embeddings)",
                                # a bfloat16/float16 model's table holds that dtype's values
                                "stored_dtype": manifest.dtype, "model_dtype": manifest.model.dtype},
    )
    root.create_group(layout.META)
    fs, base = url_to_fs(path, storage_options)
    write_json(fs, join(base, layout.PLAN), plan.model_dump())  # last: the store is fully created


def write_manifest(path: str, manifest: Manifest, storage_options: dict | None = None) -> None:
    root = open_group(path, "r+", storage_options)
    root.attrs.put({layout.MANIFEST_ATTR: manifest.model_dump(mode="json")})


def consolidate_metadata(path: str, storage_options: dict | None = None) -> None:
    """Copy every array's metadata into the root zarr.json, once the store is complete. Hosts that
    serve files but not directory listings (S3/GCS over https, nginx without autoindex) otherwise
    show plain zarr and `xarray.open_zarr` an empty group; with it, one request opens everything."""
    with warnings.catch_warnings():  # "not part of the v3 spec yet": zarr, xarray and we read it
        warnings.simplefilter("ignore", category=ZarrUserWarning)
        zarr.consolidate_metadata(open_group(path, "r+", storage_options).store, zarr_format=3)


def _chunk_crcs(block: np.ndarray, chunk_rows: int) -> list[int]:
    """crc32 of each chunk's decoded bytes; block is [rows, d] starting on a chunk boundary."""
    return [zlib.crc32(np.ascontiguousarray(block[i : i + chunk_rows]).data)
            for i in range(0, block.shape[0], chunk_rows)]


def check_range(values: np.ndarray, layers: list, dtype: np.dtype, what: str = "layer") -> None:
    """Refuse rather than store inf/nan, or values float16 can't hold: name the layer.

    One reduction per layer over the block (NaN and inf propagate into max/min), so the check costs
    a pass over memory, not an abs() copy."""
    flat = values.reshape(values.shape[0], -1)
    if flat.dtype == np.float16 and flat.flags.c_contiguous:
        # numpy reduces float16 at ~0.1 GB/s (no SIMD; a float16 model's block would hold the writer
        # back 60x); the exponent bits say the same at memory speed: all ones is inf/nan, and any
        # finite float16 fits the store. The peaks are computed only for the error message.
        if not ((flat.view(np.uint16) & 0x7C00) == 0x7C00).any():
            return
    check_peaks(np.maximum(flat.max(axis=1), -flat.min(axis=1)), layers, dtype, what)


def check_peaks(peak: np.ndarray, layers: list, dtype: np.dtype, what: str = "layer") -> None:
    """check_range's verdict from each layer's largest |value| (computed on the GPU for a GPU block)."""
    peak = np.asarray(peak, dtype=np.float64)  # a float16 block's peaks: 65520 is inf in float16
    limit = FLOAT16_OVERFLOW if dtype == np.float16 else np.inf
    if np.isfinite(peak).all() and (peak < limit).all():
        return
    bad = [layers[i] for i in range(len(peak)) if not np.isfinite(peak[i])]
    if bad:
        raise StoreError(f"non-finite values in {what} {bad}: the model produced inf/nan")
    i = int(np.argmax(peak >= limit))
    raise StoreError(
        f"{what} {layers[i]} has values up to {float(peak[i]):.4g}, outside float16's range (±65504): "
        "store this model with --dtype float32"
    )


def peaks_and_cast(block, dtype: str):
    """For a torch block on the GPU: each layer's largest |value| (NaN/inf propagate, as in
    check_range) and the block already in the stored dtype. Casting there is nearly free and halves
    a float16 store's device-to-host bytes; the host would otherwise convert on the writer's CPU.
    torch rounds float32 -> float16 to nearest even, as numpy does: the same stored bits."""
    import torch

    low, high = torch.aminmax(block.flatten(1), dim=1)
    peaks = torch.maximum(high, -low).float()
    return peaks, block.to({"float32": torch.float32, "float16": torch.float16}[dtype])


class ShardWriter:
    """Writes one shard's rows from a background thread, then commits.

    `submit(block)` queues a [n_layers, n, d] block of the next rows (numpy, or a CPU torch tensor
    with an optional `ready` event to wait on for a non-blocking device copy, and optional `peaks`
    from peaks_and_cast). The queue is bounded, so the forward pass runs at most `queue_depth`
    batches ahead of the disk and memory stays flat. `write_threads` encode and write a batch's
    layers in parallel: 1 beside a CPU forward pass, which needs the cores itself; more beside a GPU,
    where one thread (~52k MiniLM tokens/s, benchmarks/README.md) is slower than the forward.
    """

    def __init__(self, path: str, shard: ShardRecord, *, layers: list[int], dtype: str, chunk_rows: int,
                 config_fingerprint: str, storage_options: dict | None = None, queue_depth: int = 3,
                 write_threads: int = 1, written_with: dict | None = None):
        self.path = path
        self.written_with = written_with or {}
        self.shard = shard
        self.layers = layers
        self.dtype = np.dtype(dtype)
        self.chunk_rows = chunk_rows
        self.fingerprint = config_fingerprint
        self.storage_options = storage_options
        array = open_group(path, "r+", storage_options)[layout.HIDDEN]
        self._chunks = ChunkFiles(path, array, storage_options)
        d = array.shape[2]
        self._buf = np.zeros((len(layers), chunk_rows, d), dtype=self.dtype)
        self._fill = 0
        self._next_row = shard.row_start
        self._crcs: list[list[int]] = [[] for _ in layers]
        self._queue: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._pool = (ThreadPoolExecutor(write_threads, thread_name_prefix=f"writer-{shard.shard_id}")
                      if write_threads > 1 else None)
        self._error: BaseException | None = None
        # Off the main thread numcodecs' blosc compresses with one thread whatever set_nthreads says
        # (measured), so parallel writes take the pool: a layer per thread.
        self._thread = threading.Thread(target=self._drain, name=f"writer-{shard.shard_id}", daemon=True)
        self._thread.start()
        self.rows_written = 0

    # -- producer side -------------------------------------------------------------------------
    def submit(self, block, ready=None, peaks=None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((block, ready, peaks))

    def finish(self, tokens: pa.Table, examples: pa.Table) -> CommitRecord:
        # The forward pass is over and its cores are free: the writer spreads what is still queued
        # (the last batch: ~2% of a MiniLM shard's time was spent waiting for it) over them, a
        # layer per thread.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(min(len(self.layers), os.cpu_count() or 1),
                                            thread_name_prefix=f"writer-{self.shard.shard_id}")
        try:
            self._queue.put(None)
            self._thread.join()
            if self._error is not None:
                raise self._error
            if self.rows_written != self.shard.n_tokens:
                raise StoreError(f"shard {self.shard.shard_id}: wrote {self.rows_written} rows, planned "
                                 f"{self.shard.n_tokens} (the tokenizer changed between planning and run?)")
            if self._fill:
                self._flush()
        finally:
            self._pool.shutdown()
        return commit_shard(self.path, self.shard, tokens, examples, self._crcs, self.layers,
                            self.fingerprint, self.storage_options, written_with=self.written_with)

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown()

    # -- writer thread -------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks on a dead writer
            try:
                block, ready, peaks = item
                if ready is not None:
                    ready.synchronize()
                if not isinstance(block, np.ndarray):  # torch tensor (maybe bfloat16): numpy has no bf16
                    block = block.float().numpy() if str(block.dtype) == "torch.bfloat16" else block.numpy()
                if peaks is None:
                    check_range(block, self.layers, self.dtype)
                else:
                    check_peaks(np.asarray(peaks), self.layers, self.dtype)
                self._append(block)
            except BaseException as exc:  # surfaced to the producer on its next submit/finish
                self._error = exc

    def _append(self, block: np.ndarray) -> None:
        n = block.shape[1]
        if self.rows_written + n > self.shard.n_tokens:
            raise StoreError(f"shard {self.shard.shard_id}: more rows than planned")
        i = 0
        while i < n:
            if self._fill == 0 and n - i >= self.chunk_rows and block.dtype == self.dtype:
                # A whole chunk inside the block is encoded from the block itself: no copy through
                # the chunk buffer (most of a batch's rows take this path).
                self._put_chunks(block[:, i : i + self.chunk_rows])
                i += self.chunk_rows
                continue
            take = min(n - i, self.chunk_rows - self._fill)
            self._buf[:, self._fill : self._fill + take] = block[:, i : i + take]
            self._fill += take
            i += take
            if self._fill == self.chunk_rows:
                self._flush()
        self.rows_written += n

    def _flush(self) -> None:
        self._buf[:, self._fill :] = 0  # the padding rows of a shard's last chunk
        self._put_chunks(self._buf)
        self._fill = 0

    def _put_chunks(self, rows: np.ndarray) -> None:
        """Write the next chunk of every layer: rows is [n_layers, chunk_rows, d]."""
        row_chunk = self._next_row // self.chunk_rows  # shards start on chunk boundaries

        def put(li: int) -> int:
            values = np.ascontiguousarray(rows[li])
            self._chunks.put((li, row_chunk, 0), values)
            return zlib.crc32(values.data)  # codecs, crc32 and writes release the GIL

        layers = range(len(self.layers))
        # One thread beside a CPU forward pass; the pool beside a GPU, and after finish().
        crcs = self._pool.map(put, layers) if self._pool is not None else map(put, layers)
        for li, crc in enumerate(crcs):
            self._crcs[li].append(crc)
        self._next_row += self.chunk_rows


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def commit_shard(path: str, shard: ShardRecord, tokens: pa.Table, examples: pa.Table,
                 crcs: list[list[int]], layers: list[int], fingerprint: str,
                 storage_options: dict | None = None, written_with: dict | None = None) -> CommitRecord:
    fs, base = url_to_fs(path, storage_options)
    digests = {}
    for rel, table in ((layout.tokens_table(shard.shard_id), tokens),
                       (layout.examples_table(shard.shard_id), examples)):
        data = _parquet_bytes(table)
        write_bytes_atomic(fs, join(base, rel), data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    record = CommitRecord(
        shard_id=shard.shard_id, config_fingerprint=fingerprint, n_tokens=shard.n_tokens,
        n_examples=shard.example_end - shard.example_start, row_start=shard.row_start,
        n_rows_padded=shard.n_rows_padded,
        chunk_crc32={layout.HIDDEN: {str(li): c for li, c in enumerate(crcs)}},
        table_sha256=digests, written_at=now_iso(), written_with=written_with or {},
    )
    # The commit record goes last: until it exists, the shard is invisible and will be redone.
    write_json(fs, join(base, layout.commit_record(shard.shard_id)), record.model_dump(mode="json"))
    return record


def write_static_embeddings(path: str, table: np.ndarray, *, fingerprint: str,
                            storage_options: dict | None = None) -> CommitRecord:
    root = open_group(path, "r+", storage_options)
    arr = root[layout.STATIC]
    check_range(table[None], ["(input-embedding table)"], arr.dtype, what="static_embeddings")
    table = np.ascontiguousarray(table.astype(arr.dtype))
    arr[:] = table
    record = CommitRecord(
        shard_id="static", config_fingerprint=fingerprint, n_tokens=table.shape[0], n_examples=0,
        row_start=0, n_rows_padded=table.shape[0],
        chunk_crc32={layout.STATIC: {"0": _chunk_crcs(table, arr.chunks[0])}}, written_at=now_iso(),
    )
    fs, base = url_to_fs(path, storage_options)
    write_json(fs, join(base, layout.commit_record("static")), record.model_dump(mode="json"))
    return record
