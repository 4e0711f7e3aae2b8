"""`layerprobe copy SRC DST`: every key of a store, via fsspec, commit records and the root
manifest last (an interrupted copy never looks complete), then `validate` on the destination.

DST must not be SRC, inside it or contain it. An existing DST is replaced only with --overwrite and
only if it is a layerprobe store (or an interrupted copy of one); anything else is refused, never
deleted. A local DST being replaced stays until the new copy is written and verified beside it;
a remote one is deleted only once the source has been validated (checksums included), then written.
A copy that fails validation is removed (the destination held nothing, or a store this copy already
deleted), and the source is validated to say whose damage it is."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass

import numpy as np

from pipeline.errors import StoreError
from pipeline.sharing.common import (check_writable, chunk_key, fs_for, is_local, open_store_checked, overlap,
                                     protocol_of, read_array_meta, read_bytes, safe_join, store_errors)
from pipeline.sharing.validate import ValidationReport, validate_store
from pipeline.store import layout
from pipeline.store.fs import store_around, write_bytes_atomic
from schemas.manifest import FORMAT_NAME

log = logging.getLogger(__name__)

BATCH = 64


@dataclass
class CopyResult:
    src: str
    dst: str
    n_keys: int
    n_bytes: int
    report: ValidationReport        # the copy's validation; the source's when source_damaged
    kept_existing: bool = False     # verification failed and the store at dst was left as it was
    source_damaged: bool = False    # the problems are the source's own (validate SRC finds them)
    removed_copy: bool = False      # the failed copy was deleted (dst held nothing of value before)


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


# The top-level names format version 1 defines (schemas/FORMAT.md): a directory holding only these
# (plus a writer's *.tmp-* leftovers) is a store or a copy of one cut short before its root zarr.json.
_FORMAT_TOP = {"zarr.json", layout.HIDDEN, layout.LAYER_COORD, layout.STATIC, layout.META}


def _existing_destination(dfs, dbase: str) -> str | None:
    """What is at the destination: None (nothing, or an empty directory), "store" (a layerprobe
    store, possibly incomplete, damaged, or an interrupted copy), or a description of something else.

    --overwrite deletes the destination recursively, so only what this says is a store may go: a
    root zarr.json carrying a layerprobe manifest, or, where the root zarr.json is missing (a copy
    interrupted before it: copy writes it last) or unreadable (a damaged store), nothing but the
    format's own names, hidden_states among them."""
    if not dfs.exists(dbase):
        return None
    if not dfs.isdir(dbase):
        return "a file, not a layerprobe store"
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in dfs.ls(dbase, detail=False)}
    names.discard("")
    if not names:
        return None
    try:
        root = json.loads(read_bytes(dfs, f"{dbase}/zarr.json") or b"null")
    except ValueError:  # a truncated root zarr.json: judged by its names below
        root = None
    if isinstance(root, dict):  # readable: its manifest alone decides
        manifest = (root.get("attributes") or {}).get(layout.MANIFEST_ATTR)
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME:
            return "store"
        return "a Zarr group that is not a layerprobe store"
    own = {n for n in names if n in _FORMAT_TOP or ".tmp-" in n}
    if own == names and layout.HIDDEN in names:
        return "store"
    return "a directory that is not a layerprobe store"


def _check_source_keys(src: str, keys: list[str], listed: set[str] | None) -> None:
    """Refuse a source missing keys its own metadata names, before anything at the destination is
    touched (where the source can be listed; otherwise the copy itself finds them missing). HTTP
    listings are scraped from index pages and may leave files out, so they don't count here."""
    if listed is None or protocol_of(src) in ("http", "https"):
        return
    missing = [k for k in keys if k not in listed]
    if missing:
        raise StoreError(f"copy: the source {src} is missing {len(missing)} file(s) its metadata names "
                         f"(first: {missing[0]}); run `layerprobe validate {src}`")


def copy_store(src: str, dst: str, *, src_options: dict | None = None, dst_options: dict | None = None,
               overwrite: bool = False, progress=None) -> CopyResult:
    check_writable(dst, "copy: cannot write to")
    rel = overlap(src, dst)
    if rel == "is":
        raise StoreError(f"copy: source and destination are the same ({src})")
    if rel:  # replacing or writing into either one would destroy the source
        raise StoreError(f"copy: the destination {dst} {rel} the source {src}; choose a destination "
                         "outside it")
    outer = store_around(dst)
    if outer:  # replacing that store later would delete this copy without a word
        raise StoreError(f"copy: the destination {dst} is inside the store {outer}; choose a destination outside it")
    # The source is opened, checked and its keys listed before the destination is touched: a source
    # that cannot be copied must never cost the destination its contents.
    st = open_store_checked(src, src_options)  # refuses incomplete stores
    with store_errors(src, "copy"):
        keys = expected_keys(st)
        listed = _listed_keys(st.fs, st.base)
        _check_source_keys(src, keys, listed)
        if listed is not None:
            known = set(keys)
            extra = sorted(k for k in listed - known if ".tmp-" not in k)
            if extra:
                log.info("copying %d extra key(s) not defined by the format: %s", len(extra), extra[:5])
            keys += extra
    keys = _ordered(keys)
    dfs, dbase = fs_for(dst, dst_options)
    local_dst = is_local(dst)
    with store_errors(dst, "write to"):
        existing = _existing_destination(dfs, dbase)
    if existing and existing != "store":
        raise StoreError(f"copy: the destination {dst} exists and is {existing}; --overwrite only "
                         "replaces a layerprobe store: remove it yourself or choose another destination")
    if existing and not overwrite:
        raise StoreError(f"copy: destination {dst} already exists; use --overwrite to replace it")
    # A local store being replaced stays in place until the new copy is written and verified beside
    # it; object stores have no cheap rename, so there the old store is deleted first.
    staging = f"{dbase}.tmp-copy-{uuid.uuid4().hex[:8]}" if existing and local_dst else None
    source_checked = False
    if existing and not staging:
        # Deleting cannot be undone: the source's own checksums are verified first, so a damaged
        # source never costs the destination a good store (a full read; only on this path).
        src_report = validate_store(src, src_options)
        if not src_report.ok:
            return CopyResult(src=src, dst=dst, n_keys=len(keys), n_bytes=0, report=src_report,
                              kept_existing=True, source_damaged=True)
        source_checked = True
        log.info("removing existing %s", dst)
        with store_errors(dst, "write to"):
            dfs.rm(dbase, recursive=True)
    target = staging or dbase
    try:
        n_bytes = _copy_keys(st, src, dst, keys, dfs, target, local_dst, progress)
        report = validate_store(staging or dst, dst_options)
        if staging:
            report.path = dst
        if report.ok:
            if staging:
                with store_errors(dst, "write to"):
                    _swap_in(staging, dbase)
                staging = None
            return CopyResult(src=src, dst=dst, n_keys=len(keys), n_bytes=n_bytes, report=report)
        # Whose damage is it? A source that fails validation too is the answer (its report is shown:
        # retrying the copy would not help); else the transfer or the destination.
        src_report = None if source_checked else validate_store(src, src_options)
        damaged = src_report is not None and not src_report.ok
        removed = False
        if not staging:  # dst held nothing, or a store this copy already deleted: only our bytes
            with store_errors(dst, "write to"):
                dfs.rm(dbase, recursive=True)
            removed = True
        return CopyResult(src=src, dst=dst, n_keys=len(keys), n_bytes=n_bytes,
                          report=src_report if damaged else report, kept_existing=bool(staging),
                          source_damaged=damaged, removed_copy=removed)
    finally:
        if staging:  # kept: the old store stays, the staged copy goes
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: str, dbase: str) -> None:
    """Put the verified copy at `dbase`, then delete the store it replaces."""
    old = f"{dbase}.tmp-old-{uuid.uuid4().hex[:8]}"
    os.rename(dbase, old)
    try:
        os.rename(staging, dbase)
    except OSError:
        os.rename(old, dbase)
        raise
    if os.path.islink(old):  # DST was a link to a store: drop the link, never the store it names
        os.remove(old)
    else:
        shutil.rmtree(old)


def _copy_keys(st, src: str, dst: str, keys: list[str], dfs, dbase: str, local_dst: bool, progress) -> int:
    n_bytes = 0
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
    return n_bytes
