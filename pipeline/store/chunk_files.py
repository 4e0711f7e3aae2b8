"""Whole-chunk writes and reads that skip zarr's async machinery.

A shard writes only whole chunks it owns, so it needs none of what `array[...] = x` does besides
encoding and putting one object: no read-modify-write, no selection logic, no event loop. Doing it
directly halves the writer's CPU per byte (benchmarks/README.md), and on a CPU worker that CPU is
taken from the forward pass running beside it. The bytes are the array's own codecs applied in
the same order (bytes, then blosc or zstd, built from the codec's public config), written where the
array's chunk key encoding says, so zarr reads them back as if it had written them; tests compare
the two paths byte for byte. Reading scattered rows (a probe's target tokens) is the mirror image:
fetch and decode each touched chunk whole, in a thread pool (the codecs release the GIL). Any codec
chain this module does not know falls back to zarr.
"""

from __future__ import annotations

import os
import posixpath
import sys

import numcodecs
import numpy as np
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from pipeline.errors import StoreError
from pipeline.store.fs import url_to_fs

_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
            "bitshuffle": numcodecs.Blosc.BITSHUFFLE}


def _compressor(codec):
    """A numcodecs codec producing the same bytes as the zarr v3 bytes-to-bytes codec, or None if
    there is no such codec this module knows (then the caller uses zarr)."""
    cfg = codec.to_dict()["configuration"]
    if isinstance(codec, BloscCodec):
        return numcodecs.Blosc(cname=cfg["cname"], clevel=cfg["clevel"], shuffle=_SHUFFLE[cfg["shuffle"]],
                               blocksize=cfg["blocksize"], typesize=cfg["typesize"])
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=cfg["level"], checksum=cfg["checksum"])
    return None


class ChunkFiles:
    """Put whole chunks of one zarr v3 array: `put((layer, row_chunk, 0), values)`."""

    def __init__(self, path: str, array: zarr.Array, storage_options: dict | None = None):
        self._array = array
        self._fs, base = url_to_fs(path, storage_options)
        self._dir = posixpath.join(base, array.path)
        self._made: set[str] = set()
        codecs = array.metadata.codecs
        first, rest = codecs[0], codecs[1:]
        little = sys.byteorder == "little" or array.dtype.itemsize == 1
        self._direct = (isinstance(first, BytesCodec) and (first.endian is None or first.endian.value == "little")
                        and little and len(rest) <= 1)
        self._compressor = _compressor(rest[0]) if self._direct and rest else None
        if rest and self._compressor is None:
            self._direct = False

    def _selection(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, self._array.chunks))

    def _path(self, coords: tuple[int, ...]) -> str:
        return posixpath.join(self._dir, self._array.metadata.encode_chunk_key(coords))

    def put(self, coords: tuple[int, ...], values: np.ndarray) -> None:
        if not self._direct:  # an unknown codec chain: let zarr encode it
            self._array[self._selection(coords)] = values.reshape(self._array.chunks)
            return
        values = np.ascontiguousarray(values)
        data = self._compressor.encode(values) if self._compressor is not None else values.data
        path = self._path(coords)
        if isinstance(self._fs, LocalFileSystem):
            parent = os.path.dirname(path)
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            with open(path, "wb") as fh:
                fh.write(data)
        else:
            self._fs.pipe_file(path, bytes(data))

    def get(self, coords: tuple[int, ...]) -> np.ndarray:
        """One whole chunk, decoded, in the array's chunk shape (read-only)."""
        if not self._direct:
            return self._array[self._selection(coords)]
        path = self._path(coords)
        try:
            if isinstance(self._fs, LocalFileSystem):
                with open(path, "rb") as fh:
                    data = fh.read()
            else:
                data = self._fs.cat_file(path)
        except FileNotFoundError:
            # zarr would return fill values; in a committed shard a missing chunk is damage.
            raise StoreError(f"{self._array.path}: chunk {self._array.metadata.encode_chunk_key(coords)} "
                             "is missing (run `layerprobe validate` on the store)") from None
        try:
            if self._compressor is not None:
                data = self._compressor.decode(data)
            return np.frombuffer(data, dtype=self._array.dtype).reshape(self._array.chunks)
        except (RuntimeError, ValueError) as exc:  # what blosc/zstd and a wrong-sized buffer raise
            raise StoreError(f"{self._array.path}: chunk {self._array.metadata.encode_chunk_key(coords)} is "
                             f"corrupt ({exc}; run `layerprobe validate` on the store)") from None
