"""`layerprobe copy SRC DST`: every key of a store, via fsspec, commit records and the root
manifest last (an interrupted copy never looks complete), then `validate` on the destination."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.errors import StoreError
from pipeline.sharing.common import (chunk_key, fs_for, is_local, open_store_checked, read_array_meta,
                                     safe_join, store_errors)
from pipeline.sharing.validate import ValidationReport, validate_store
from pipeline.store import layout
from pipeline.store.fs import write_bytes_atomic

log = logging.getLogger(__name__)

BATCH = 64


@dataclass
class CopyResult:
    src: str
    dst: str
    n_keys: int
    n_bytes: int
    report: ValidationReport


def expected_keys(st) -> list[str]:
    """Every key format version 1 defines for this store, from its metadata (no listing needed)."""
    fs, base = st.fs, st.base
    keys = ["zarr.json", f"{layout.META}/zarr.json", layout.PLAN]
    for name in (layout.HIDDEN, layout.LAYER_COORD, layout.STATIC):
        meta = read_array_meta(fs, base, name)
        keys.append(f"{name}/zarr.json")
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        grid = tuple(-(-s // c) for s, c in zip(shape, chunks))
        keys += [f"{name}/{chunk_key(meta, tuple(int(i) for i in idx))}" for idx in np.ndindex(*grid)]
    for s in st.plan.shards:
        keys += [layout.tokens_table(s.shard_id), layout.examples_table(s.shard_id),
                 layout.commit_record(s.shard_id)]
    keys.append(layout.commit_record("static"))
    return keys


def _listed_keys(fs, base: str) -> set[str] | None:
    try:
        found = fs.find(base)
    except Exception:  # noqa: BLE001 - e.g. HTTP without listings
        return None
    prefix = base.rstrip("/") + "/"
    return {p[len(prefix):] for p in found if p.startswith(prefix)}


def _ordered(keys: list[str]) -> list[str]:
    """Data first, then commit records, then the root zarr.json (holding the manifest) last."""
    def rank(k: str) -> int:
        if k == "zarr.json":
            return 2
        if k.startswith("meta/commits/"):
            return 1
        return 0
    return sorted(keys, key=lambda k: (rank(k), k))


def _same_place(src: str, dst: str) -> bool:
    import os

    if is_local(src) and is_local(dst):
        strip = lambda p: os.path.realpath(p.removeprefix("file://"))  # noqa: E731
        return strip(src) == strip(dst)
    return src.rstrip("/") == dst.rstrip("/")


def copy_store(src: str, dst: str, *, src_options: dict | None = None, dst_options: dict | None = None,
               overwrite: bool = False, progress=None) -> CopyResult:
    if _same_place(src, dst):
        raise StoreError(f"copy: source and destination are the same ({src})")
    st = open_store_checked(src, src_options)  # refuses incomplete stores
    dfs, dbase = fs_for(dst, dst_options)
    with store_errors(dst, "write to"):
        if dfs.exists(dbase) and (not dfs.isdir(dbase) or dfs.ls(dbase, detail=False)):
            if not overwrite:
                raise StoreError(f"copy: destination {dst} already exists; use --overwrite to replace it")
            log.info("removing existing %s", dst)
            dfs.rm(dbase, recursive=True)
    with store_errors(src, "copy"):
        keys = expected_keys(st)
        listed = _listed_keys(st.fs, st.base)
        if listed is not None:
            known = set(keys)
            extra = sorted(k for k in listed - known if ".tmp-" not in k)
            if extra:
                log.info("copying %d extra key(s) not defined by the format: %s", len(extra), extra[:5])
            keys += extra
    keys = _ordered(keys)
    n_bytes = 0
    local_dst = is_local(dst)
    for i in range(0, len(keys), BATCH):
        part = keys[i : i + BATCH]
        with store_errors(src, "read"):
            src_paths = [safe_join(st.base, k) for k in part]
            got = st.fs.cat(src_paths, on_error="return")
            data = {}
            for k, p in zip(part, src_paths):
                v = got.get(p, FileNotFoundError(p))
                if isinstance(v, FileNotFoundError):
                    raise StoreError(f"copy: {k} is missing from the source {src}; run "
                                     f"`layerprobe validate {src}`")
                if isinstance(v, BaseException):
                    raise v
                data[safe_join(dbase, k)] = v
        with store_errors(dst, "write to"):
            if local_dst:
                for p, v in data.items():
                    write_bytes_atomic(dfs, p, v)
            else:
                dfs.pipe(data)
        n_bytes += sum(len(v) for v in data.values())
        if progress:
            progress(min(i + BATCH, len(keys)), len(keys))
    report = validate_store(dst, dst_options)
    return CopyResult(src=src, dst=dst, n_keys=len(keys), n_bytes=n_bytes, report=report)
