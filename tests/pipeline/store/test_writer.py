"""Shard writing: chunk ownership, idempotent rewrites, visibility only after commit, range checks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import zarr

from pipeline.errors import StoreError
from pipeline.executors.planning import plan_shards
from pipeline.store import layout, open_store
from pipeline.store.writer import ShardWriter, create_store, write_manifest, write_static_embeddings
from schemas.manifest import Manifest, ModelInfo, SourceInfo, TokenizerInfo
from schemas.tables import TOKENS_SCHEMA

D = 8
LAYERS = [0, 1, 2]


def _manifest(dtype="float32"):
    return Manifest(
        created_at="now", config_fingerprint="fp",
        model=ModelInfo(name="m", architecture="X", model_type="x", content_hash="h", n_layers=2, d_model=D,
                        vocab_size=10, dtype="float32"),
        tokenizer=TokenizerInfo(name="m", cls="T", content_hash="t", padding_side="right", model_max_length=64),
        source=SourceInfo(path="p", format="text", fingerprint="s", n_examples=3, columns=[]),
        variant="base", keep="all", layers=LAYERS, dtype=dtype, chunk_rows=4, codec="blosc-lz4", max_length=64,
    )


def _tokens(shard, n):
    cols = {f.name: [] for f in TOKENS_SCHEMA}
    for r in range(n):
        for k, v in dict(example_id=shard.example_start, position=r, row=shard.row_start + r, token_id=1,
                         token="a", char_start=0, char_end=1, word_id=0, special=False, is_target=False).items():
            cols[k].append(v)
    return pa.table(cols, schema=TOKENS_SCHEMA)


def _examples(shard):
    return pa.table({"example_id": list(range(shard.example_start, shard.example_end))})


def _store(tmp_path, lengths=(5, 6, 3), dtype="float32"):
    plan = plan_shards(list(lengths), list(lengths), shard_tokens=1, chunk_rows=4)
    path = str(tmp_path / "s.zarr")
    create_store(path, _manifest(dtype), plan, d_model=D, vocab_size=10)
    return path, plan


def _write(path, shard, values, dtype="float32"):
    w = ShardWriter(path, shard, layers=LAYERS, dtype=dtype, chunk_rows=4, config_fingerprint="fp")
    for i in range(0, values.shape[1], 2):  # blocks that straddle chunk boundaries
        w.submit(values[:, i : i + 2])
    return w.finish(_tokens(shard, values.shape[1]), _examples(shard))


def test_shards_are_invisible_until_committed_and_readable_after(tmp_path):
    path, plan = _store(tmp_path)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path)
    rng = np.random.default_rng(0)
    data = {s.shard_id: rng.normal(size=(3, s.n_tokens, D)).astype("float32") for s in plan.shards}
    _write(path, plan.shards[0], data[0])
    partial = open_store(path, allow_incomplete=True)
    assert partial.committed == {0} and len(partial.tokens) == 5
    for s in plan.shards[1:]:
        _write(path, s, data[s.shard_id])
    write_static_embeddings(path, np.ones((10, D), "float32"), fingerprint="fp")
    st = open_store(path)
    for li, L in enumerate(LAYERS):
        np.testing.assert_array_equal(st.layer(L), np.concatenate([data[k][li] for k in sorted(data)], axis=0))
    np.testing.assert_array_equal(st.layer(1, [6, 0]), np.stack([data[1][1][1], data[0][1][0]]))


@pytest.mark.parametrize("write_threads", [1, 3])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_blocks_holding_whole_chunks_store_the_same_rows_and_checksums(tmp_path, dtype, write_threads):
    # Blocks of 9 and 5 rows with 4-row chunks: whole chunks inside a block are encoded from the block
    # itself (same dtype) or cast through the chunk buffer (float16); both must land row for row,
    # written by one thread (beside a CPU forward) or a thread per layer (beside a GPU).
    from pipeline.sharing.validate import validate_store

    path, plan = _store(tmp_path, lengths=(14, 6, 3), dtype=dtype)
    rng = np.random.default_rng(1)
    data = {s.shard_id: rng.normal(size=(3, s.n_tokens, D)).astype("float32") for s in plan.shards}
    for s in plan.shards:
        w = ShardWriter(path, s, layers=LAYERS, dtype=dtype, chunk_rows=4, config_fingerprint="fp",
                        write_threads=write_threads)
        values = data[s.shard_id].astype(dtype)
        for a, b in ((0, 9), (9, values.shape[1])):
            if a < values.shape[1]:
                w.submit(values[:, a : min(b, values.shape[1])])
        w.finish(_tokens(s, values.shape[1]), _examples(s))
    write_static_embeddings(path, np.ones((10, D), "float32"), fingerprint="fp")
    st = open_store(path)
    for li, L in enumerate(LAYERS):
        expected = np.concatenate([data[k][li] for k in sorted(data)], axis=0).astype(dtype)
        np.testing.assert_array_equal(st.layer(L), expected)
    report = validate_store(path)  # chunk checksums; the manifest's run stats are the driver's, not written here
    assert [p for p in report.problems if p.where != "manifest"] == []
    assert report.n_chunks == 3 * sum(s.n_rows_padded // 4 for s in plan.shards) + 1  # + the static chunk


def test_static_rows_by_token_id_come_back_in_the_order_asked(tmp_path):
    path, plan = _store(tmp_path)
    for s in plan.shards:
        _write(path, s, np.zeros((3, s.n_tokens, D), "float32"))
    table = np.random.default_rng(3).standard_normal((10, D)).astype("float32")
    write_static_embeddings(path, table, fingerprint="fp")
    st = open_store(path)
    ids = [9, 0, 3, 9, 5]
    np.testing.assert_array_equal(st.static_embeddings(ids), table[ids])
    np.testing.assert_array_equal(st.static_embeddings(), table)
    assert st.static_embeddings([]).shape == (0, D)
    with pytest.raises(StoreError, match="vocabulary"):
        st.static_embeddings([10])


def test_rewriting_a_shard_is_idempotent(tmp_path):
    path, plan = _store(tmp_path)
    values = np.arange(3 * 5 * D, dtype="float32").reshape(3, 5, D)
    first = _write(path, plan.shards[0], values)
    chunk = tmp_path / "s.zarr" / "hidden_states" / "c" / "0" / "1" / "0"
    before = chunk.read_bytes()
    second = _write(path, plan.shards[0], values)
    assert chunk.read_bytes() == before
    assert first.chunk_crc32 == second.chunk_crc32 and first.table_sha256 == second.table_sha256


def test_each_shard_writes_only_its_own_chunks(tmp_path):
    path, plan = _store(tmp_path)
    _write(path, plan.shards[1], np.ones((3, 6, D), "float32"))
    # shard 1 owns rows [8, 16) = chunks 2 and 3; nothing else may exist
    written = sorted(p.name for p in (tmp_path / "s.zarr" / "hidden_states" / "c" / "0").iterdir())
    assert written == ["2", "3"]


@pytest.mark.parametrize("peak", [65520.0, 1e6])
def test_float16_overflow_is_an_error_naming_the_layer(tmp_path, peak):
    path, plan = _store(tmp_path, dtype="float16")
    values = np.zeros((3, 5, D), "float32")
    values[2, 1, 3] = -peak
    with pytest.raises(StoreError, match="layer 2 .*float16"):
        _write(path, plan.shards[0], values, dtype="float16")
    assert not (tmp_path / "s.zarr" / layout.commit_record(0)).exists()


def test_values_that_float16_rounds_to_its_maximum_are_stored(tmp_path):
    # 65519 rounds to 65504 (the cast's own rounding, as for any value); only from 65520 on does
    # the cast give inf, which the previous test refuses.
    path, plan = _store(tmp_path, dtype="float16")
    values = np.zeros((3, 5, D), "float32")
    values[2, 1, :2] = [65519.0, -65510.0]
    assert np.isfinite(values.astype("float16")).all()
    _write(path, plan.shards[0], values, dtype="float16")
    stored = zarr.open_group(path, mode="r")[layout.HIDDEN][2, 1, :2]
    np.testing.assert_array_equal(stored, [65504, -65504])


def test_non_finite_activations_are_refused(tmp_path):
    path, plan = _store(tmp_path)
    values = np.zeros((3, 5, D), "float32")
    values[1, 0, 0] = np.nan
    with pytest.raises(StoreError, match="non-finite"):
        _write(path, plan.shards[0], values)


def test_a_store_with_a_newer_format_version_is_refused(tmp_path):
    path, _ = _store(tmp_path)
    m = _manifest()
    m.format_version = 99
    write_manifest(path, m)
    with pytest.raises(StoreError, match="format version 99"):
        open_store(path, allow_incomplete=True)


@pytest.mark.parametrize("contiguous", [True, False])
def test_a_float16_block_holding_inf_is_refused_naming_the_layer(tmp_path, contiguous):
    # A float16 model's blocks are checked through their exponent bits (numpy's float16 max/min is
    # 60x slower); a strided block takes the plain reduction. Both must catch inf.
    path, plan = _store(tmp_path, dtype="float16")
    values = np.zeros((3, 5, 2 * D), "float16")
    values[1, 4, 2] = np.inf
    values = values[:, :, :D] if not contiguous else np.ascontiguousarray(values[:, :, :D])
    with pytest.raises(StoreError, match=r"non-finite values in layer \[1\]"):
        _write(path, plan.shards[0], values, dtype="float16")


def test_blocks_cast_on_the_device_store_the_same_bits_and_keep_the_range_check(tmp_path):
    # A GPU forward casts to the stored dtype and computes each layer's peak on the device
    # (peaks_and_cast); torch's float32 -> float16 rounding must equal numpy's, and the writer must
    # still refuse what float16 cannot hold. torch on CPU runs the same function.
    import torch

    from pipeline.store.writer import peaks_and_cast

    path, plan = _store(tmp_path, dtype="float16")
    rng = np.random.default_rng(7)
    values = (rng.normal(size=(3, 5, D)) * rng.choice([1e-6, 1, 1e4], size=(3, 5, D))).astype("float32")
    values[0, 0, :5] = [65504, -65504, 2.0**-24, 2.0**-14 * 1.5, 1e-8]  # float16: max, min, subnormals, underflow
    peaks, cast = peaks_and_cast(torch.from_numpy(values), "float16")
    np.testing.assert_array_equal(cast.numpy().view(np.uint16), values.astype("float16").view(np.uint16))
    np.testing.assert_array_equal(peaks.numpy(), np.abs(values).reshape(3, -1).max(axis=1))

    w = ShardWriter(path, plan.shards[0], layers=LAYERS, dtype="float16", chunk_rows=4, config_fingerprint="fp")
    w.submit(cast.numpy(), peaks=peaks.numpy())
    w.finish(_tokens(plan.shards[0], 5), _examples(plan.shards[0]))
    stored = zarr.open_group(path, mode="r")[layout.HIDDEN][:, :5]  # the other shards are not written
    np.testing.assert_array_equal(stored, values.astype("float16"))

    values[2, 1, 3] = 1e6  # cast on the device it is inf; the peak says why
    peaks, cast = peaks_and_cast(torch.from_numpy(values), "float16")
    w = ShardWriter(path, plan.shards[0], layers=LAYERS, dtype="float16", chunk_rows=4, config_fingerprint="fp")
    w.submit(cast.numpy(), peaks=peaks.numpy())
    with pytest.raises(StoreError, match="layer 2 has values up to 1e\\+06, outside float16's range"):
        w.finish(_tokens(plan.shards[0], 5), _examples(plan.shards[0]))
