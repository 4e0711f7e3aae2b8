"""Helpers shared by the sharing commands: storage options, opening a store with one-line errors,
reading raw keys, decoding chunks without executing anything from the store."""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import zlib
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StoreError
from pipeline.store.fs import join, url_to_fs

LOCAL_PROTOCOLS = ("file", "local")
# s3fs/botocore client settings users tend to pass flat; s3fs wants them under client_kwargs.
_S3_CLIENT_KEYS = ("endpoint_url", "region_name", "verify", "use_ssl")


def protocol_of(path: str) -> str:
    return path.split("://", 1)[0].lower() if "://" in path else "file"


def is_local(path: str) -> bool:
    return protocol_of(path) in LOCAL_PROTOCOLS


def check_writable(path: str, what: str) -> None:
    """Refuse a destination fsspec can only read (http/https: no writes, no deletes), before
    anything is read, planned or deleted."""
    if protocol_of(path) in ("http", "https"):
        raise StoreError(f"{what} {path}: http(s) URLs are read-only; write to a local path or an object "
                         "store (s3://, gs://, ...) and serve that")


# Spellings fsspec accepts for one and the same backend: s3a://b/x and s3://b/x are one object.
_PROTOCOL_ALIASES = {"local": "file", "s3a": "s3", "gcs": "gs", "https": "http"}


def location(path: str) -> tuple[str, str]:
    """(protocol, normalised path) naming where `path` lives, for deciding whether two paths overlap.

    Local paths (plain or file://) are resolved (symlinks, `..`, relative to the working directory);
    URLs are compared textually after normalising the protocol spelling, `.`/`..`/`//` and, for
    http, the host's case. Nothing is read."""
    proto = protocol_of(path)
    if proto in LOCAL_PROTOCOLS:
        bare = path.split("://", 1)[1] if "://" in path else path
        return "file", os.path.realpath(os.path.expanduser(bare))
    rest = path.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0]
    proto = _PROTOCOL_ALIASES.get(proto, proto)
    if proto == "http":
        host, _, tail = rest.partition("/")
        rest = f"{host.lower()}/{tail}"
    return proto, posixpath.normpath("/" + rest)


def overlap(a: str, b: str) -> str | None:
    """How `b` sits relative to `a`: "is" (the same place), "is inside", "contains", or None."""
    (pa_, la), (pb, lb) = location(a), location(b)
    if pa_ != pb:
        return None
    if la == lb:
        return "is"
    if lb.startswith(la.rstrip("/") + "/"):
        return "is inside"
    if la.startswith(lb.rstrip("/") + "/"):
        return "contains"
    return None


def _parse_value(raw: str):
    try:
        return json.loads(raw)  # true/false/null/numbers/JSON objects
    except ValueError:
        return raw


def parse_storage_options(items: list[str] | None) -> dict:
    """`key=value` strings -> fsspec storage options. Values are JSON if they parse, else strings;
    dotted keys nest (`client_kwargs.region_name=x`)."""
    opts: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StoreError(f"--storage-option {item!r}: expected key=value")
        node = opts
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StoreError(f"--storage-option {item!r}: {part} is not a mapping")
        node[leaf] = _parse_value(raw)
    return opts


def options_for(path: str, opts: dict | None) -> dict | None:
    """The storage options that apply to `path`: none for local paths; for s3 the flat client
    settings (endpoint_url, region_name, ...) moved under client_kwargs, where s3fs expects them."""
    if not opts or is_local(path):
        return None
    opts = {k: (dict(v) if isinstance(v, dict) else v) for k, v in opts.items()}
    if protocol_of(path) in ("s3", "s3a"):
        ck = opts.setdefault("client_kwargs", {})
        for key in _S3_CLIENT_KEYS:
            if key in opts:
                ck.setdefault(key, opts.pop(key))
        if not ck:
            opts.pop("client_kwargs")
    return opts


def safe_join(base: str, rel: str) -> str:
    """join() that refuses names escaping the store, as a StoreError (metadata is untrusted)."""
    try:
        return join(base, rel)
    except ValueError as exc:
        raise StoreError(f"store metadata names a path outside the store ({rel!r}); refusing it") from None


@contextmanager
def store_errors(path: str, action: str = "open"):
    """Turn the ways a store or a remote can fail into one-line StoreErrors."""
    from pydantic import ValidationError

    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as exc:
        # FileNotFoundError(2, "No such file or directory", name) or fsspec's FileNotFoundError(name)
        name = exc.filename or next((a for a in exc.args if isinstance(a, str)), None)
        raise StoreError(f"cannot {action} {path}: {exc.strerror or 'missing'}" + (f" ({name})" if name else "")) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise StoreError(f"cannot {action} {path}: invalid store metadata ({where}: {first['msg']})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot {action} {path}: corrupt JSON metadata ({exc})") from None
    except ValueError as exc:  # fs.join refusing an escaping path, malformed URLs, ...
        raise StoreError(f"cannot {action} {path}: {exc}") from None
    except (OSError, ConnectionError) as exc:
        raise StoreError(f"cannot {action} {path}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # aiohttp/botocore client errors have no common base we can import cheaply
        mod = type(exc).__module__ or ""
        if mod.startswith(("aiohttp", "botocore", "s3fs", "fsspec", "zarr")):
            raise StoreError(f"cannot {action} {path}: {type(exc).__name__}: {exc}") from None
        raise


def open_store_checked(path: str, storage_options: dict | None = None, *, allow_incomplete: bool = False):
    from pipeline.store.reader import open_store

    with store_errors(path):
        return open_store(path, allow_incomplete=allow_incomplete,
                          storage_options=options_for(path, storage_options))


def fs_for(path: str, storage_options: dict | None = None):
    with store_errors(path):
        return url_to_fs(path, options_for(path, storage_options))


def read_bytes(fs, path: str) -> bytes | None:
    """Whole-object read (no range requests: plain HTTP servers lack them); None if missing."""
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def read_many(fs, paths: list[str], batch: int = 128):
    """Yield (path, bytes | exception) for each path, fetching concurrently on async filesystems."""
    for i in range(0, len(paths), batch):
        part = paths[i : i + batch]
        got = fs.cat(part, on_error="return") if len(part) > 1 else {}
        if len(part) == 1:
            try:
                got = {part[0]: fs.cat_file(part[0])}
            except Exception as exc:  # noqa: BLE001 - returned to the caller to classify
                got = {part[0]: exc}
        for p in part:
            yield p, got.get(p, FileNotFoundError(p))


def table_from_bytes(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def read_table(fs, base: str, rel: str) -> pa.Table:
    data = read_bytes(fs, safe_join(base, rel))
    if data is None:
        raise StoreError(f"table {rel} is missing from the store (run `layerprobe validate` on the store)")
    try:
        return table_from_bytes(data)
    except (pa.ArrowInvalid, OSError) as exc:  # as the probes' reader says it (pipeline/store/reader.py)
        raise StoreError(f"table {rel} is corrupt ({exc}; run `layerprobe validate` on the store)") from None


# -- chunk decoding --------------------------------------------------------------------------------
def _decode_bytes_codec(name: str, conf: dict, data: bytes) -> bytes:
    if name == "blosc":
        from numcodecs import Blosc

        return bytes(Blosc().decode(data))
    if name == "zstd":
        from numcodecs import Zstd

        return bytes(Zstd().decode(data))
    if name == "gzip":
        return gzip.decompress(data)
    if name == "crc32c":
        return data[:-4]
    raise StoreError(f"unsupported codec {name!r} in the store (format version 1 uses bytes, blosc, zstd)")


def decode_chunk(raw: bytes, meta: dict) -> np.ndarray:
    """Decode one chunk's stored bytes to an array of the full chunk shape, from the array's
    zarr.json (`meta`). Raises ValueError/RuntimeError on corrupt data."""
    codecs = meta["codecs"]
    shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    names = [c["name"] for c in codecs]
    if not names or names[0] != "bytes":
        raise StoreError(f"unsupported codec chain {names} (format version 1 starts with 'bytes')")
    data = raw
    for c in reversed(codecs[1:]):
        data = _decode_bytes_codec(c["name"], c.get("configuration", {}), data)
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    dtype = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"decoded {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def chunk_crc32(decoded: np.ndarray, valid_rows: int | None = None) -> int:
    """crc32 of the chunk's little-endian C-order bytes, limited to the rows inside the array
    (an edge chunk's padding is not part of the checksum)."""
    arr = decoded if valid_rows is None else decoded[:valid_rows]
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return zlib.crc32(arr.data)


def chunk_key(meta: dict, coords: tuple[int, ...]) -> str:
    enc = meta.get("chunk_key_encoding", {"name": "default"})
    sep = enc.get("configuration", {}).get("separator", "/" if enc["name"] == "default" else ".")
    body = sep.join(str(c) for c in coords)
    return f"c{sep}{body}" if enc["name"] == "default" else (body or "0")


def read_array_meta(fs, base: str, name: str) -> dict:
    data = read_bytes(fs, safe_join(base, f"{name}/zarr.json"))
    if data is None:
        raise StoreError(f"array {name} is missing from the store ({name}/zarr.json)")
    return json.loads(data)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n}"
