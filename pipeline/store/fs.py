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


# fsspec's backends for the object stores the README names, each its own package
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
             "abfss": "adlfs", "adl": "adlfs"}


def url_to_fs(path: str, storage_options: dict | None = None):
    try:
        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    except ImportError as exc:  # the URL's fsspec backend is not installed
        from pipeline.errors import StoreError

        protocol = path.split("://", 1)[0]
        package = _BACKENDS.get(protocol)
        hint = f"pip install {package}" if package else "install the fsspec backend for it"
        raise StoreError(f"{path}: {protocol}:// needs a package that is not installed ({hint}; {exc})") from None
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


def root_manifest(fs, base: str) -> dict | None:
    """The layerprobe manifest in `base`/zarr.json, or None where there is none: no such file (or
    `base` is a file), not JSON, or a Zarr group without one. Other errors (permissions, a remote
    host's refusal) propagate: they say nothing about whether a store is there."""
    from pipeline.store.layout import MANIFEST_ATTR

    try:
        with fs.open(join(base, "zarr.json"), "rb") as fh:
            meta = json.loads(fh.read())
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: not JSON, not UTF-8
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    manifest = attrs.get(MANIFEST_ATTR) if isinstance(attrs, dict) else None
    return manifest if isinstance(manifest, dict) else None


def enclosing_store(path: str) -> str | None:
    """The local layerprobe store that `path` is or lies inside (a folder whose zarr.json carries
    the manifest), or None. Writing a store or probe results there would put files into the store,
    and replacing the outer store would delete them without a word."""
    if is_url(path):
        return None
    local = LocalFileSystem()
    p = os.path.abspath(os.path.expanduser(path))
    while True:
        try:
            if root_manifest(local, p) is not None:
                return p
        except OSError:  # an unreadable folder on the way up is not a store we could write into
            pass
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def store_around(path: str) -> str | None:
    """The local store that `path` lies inside, not counting a store at `path` itself (which is
    what a run there replaces): writing a new store or a copy into another one is refused."""
    path = path.removeprefix("file://")
    return None if is_url(path) else enclosing_store(os.path.dirname(os.path.abspath(os.path.expanduser(path))))
