"""Direct whole-chunk writes produce the very bytes zarr itself would write, and direct reads decode them alike."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.errors import StoreError
from pipeline.store.chunk_files import ChunkFiles
from pipeline.store.writer import compressors_for


def _chunk_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "/c/" in "/" + p.relative_to(root).as_posix()}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("codec", ["blosc-lz4", "zstd", "none"])
def test_direct_chunk_writes_equal_zarrs_own_bytes(tmp_path, codec, dtype):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, 8, 5)).astype(dtype)
    arrays = {}
    for name in ("by_zarr", "direct"):
        arrays[name] = zarr.create_array(str(tmp_path / name), shape=(2, 8, 5), chunks=(1, 4, 5), dtype=dtype,
                                         compressors=compressors_for(codec), fill_value=0,
                                         config={"write_empty_chunks": True})
    arrays["by_zarr"][:] = values
    chunks = ChunkFiles(str(tmp_path / "direct"), arrays["direct"])
    assert chunks._direct, "a codec the writer uses fell back to zarr's slow path"
    for layer in range(2):
        for r in range(2):
            chunks.put((layer, r, 0), values[layer, 4 * r : 4 * r + 4])
    assert _chunk_files(tmp_path / "direct") == _chunk_files(tmp_path / "by_zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "direct"))[:], values)


def test_an_unknown_codec_chain_falls_back_to_zarr(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a"), shape=(1, 4, 3), chunks=(1, 4, 3), dtype="float32",
                            compressors=zarr.codecs.GzipCodec(level=1), fill_value=0)
    chunks = ChunkFiles(str(tmp_path / "a"), arr)
    assert not chunks._direct
    values = np.arange(12, dtype="float32").reshape(4, 3)
    chunks.put((0, 0, 0), values)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"))[0], values)


@pytest.mark.parametrize("codec", ["blosc-lz4", "zstd", "none"])
def test_direct_chunk_reads_equal_zarrs_decoding(tmp_path, codec):
    values = np.random.default_rng(1).standard_normal((2, 8, 5)).astype("float32")
    arr = zarr.create_array(str(tmp_path / "a"), shape=(2, 8, 5), chunks=(1, 4, 5), dtype="float32",
                            compressors=compressors_for(codec), fill_value=0)
    arr[:] = values
    chunks = ChunkFiles(str(tmp_path / "a"), arr)
    for layer in range(2):
        for r in range(2):
            np.testing.assert_array_equal(chunks.get((layer, r, 0))[0], values[layer, 4 * r : 4 * r + 4])


def test_a_missing_chunk_is_an_error_not_zeros(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a"), shape=(1, 8, 3), chunks=(1, 4, 3), dtype="float32",
                            compressors=compressors_for("blosc-lz4"), fill_value=0)
    arr[:] = 1.0
    (tmp_path / "a" / "c" / "0" / "1" / "0").unlink()
    with pytest.raises(StoreError, match="missing"):
        ChunkFiles(str(tmp_path / "a"), arr).get((0, 1, 0))


def test_an_edge_chunk_reads_whole_with_its_real_rows_first(tmp_path):
    # A vocabulary is rarely a multiple of the chunk rows: zarr stores the last chunk full-size.
    values = np.random.default_rng(2).standard_normal((10, 3)).astype("float32")
    arr = zarr.create_array(str(tmp_path / "a"), shape=(10, 3), chunks=(4, 3), dtype="float32",
                            compressors=compressors_for("blosc-lz4"), fill_value=0)
    arr[:] = values
    edge = ChunkFiles(str(tmp_path / "a"), arr).get((2, 0))
    assert edge.shape == (4, 3)
    np.testing.assert_array_equal(edge[:2], values[8:])
