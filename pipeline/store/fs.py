"""Filesystem access for the non-Zarr parts of a store (JSON, Parquet), local or any fsspec URL."""

from __future__ import annotations

import json
import os
import posixpath
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def url_to_fs(path: str, storage_options: dict | None = None):
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs, root.rstrip("/")


def join(root: str, *parts: str) -> str:
    for p in parts:
        # Store metadata names files relative to the store; never let one escape it.
        if p.startswith("/") or ".." in p.split("/"):
            raise ValueError(f"refusing a path that leaves the store: {p!r}")
    return posixpath.join(root, *parts)


def write_bytes_atomic(fs, path: str, data: bytes) -> None:
    """Local: write a temp file and rename it (atomic on POSIX). Object stores: a PUT is atomic."""
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def write_json(fs, path: str, obj) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(fs, path: str):
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


def enclosing_store(path: str) -> str | None:
    """The local layerprobe store that `path` is or lies inside (a folder whose zarr.json carries
    the manifest), or None. Writing a store or probe results there would put files into the store,
    and replacing the outer store would delete them without a word."""
    if is_url(path):
        return None
    p = os.path.abspath(os.path.expanduser(path))
    while True:
        meta = os.path.join(p, "zarr.json")
        if os.path.isfile(meta):
            try:
                with open(meta, "rb") as fh:
                    if "layerprobe" in json.loads(fh.read()).get("attributes", {}):
                        return p
            except (OSError, ValueError, AttributeError):
                pass
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent
