"""Every stored vector equals model(**enc, output_hidden_states=True).hidden_states[L] for that example
run alone, whatever the batching and padding side, on the CPU and on a GPU.

The GPU cases (marked `gpu`) are skipped where torch sees no CUDA device, as on CI; they run on a
GPU machine with `pytest -m gpu` (benchmarks/gpu_check.sh). The GPU path differs from the CPU one:
the range check and the cast run on the device, blocks reach the writer through pinned memory and
a side stream, and the writer encodes with several threads."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


GPU = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="torch sees no CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]


def _write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t, "idx": i}) + "\n" for i, t in enumerate(texts)))
    return path


def _reference(model_dir, text, device="cpu", dtype=None):
    """Each layer's vectors of `text` run alone, as float32 numpy (from `dtype` weights, if given)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, **({"dtype": dtype} if dtype else {})).eval().to(device)
    enc = tok(text, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model(**enc, output_hidden_states=True)
    return [h[0].float().cpu().numpy() for h in out.hidden_states]


def _extract(model_dir, data, out, **kw):
    from pipeline.executors.extract_job import run_extract
    from schemas.job import ExtractSpec

    spec = ExtractSpec(model=str(model_dir), data=str(data), out=str(out), **kw)
    return run_extract(spec, executor="local", progress=False)


def assert_store_matches_reference(store_path, model_dir, texts, atol, device="cpu", dtype=None, rtol=0.0):
    """Largest error over every stored vector; each layer within atol + rtol x that layer's largest
    |value| in the reference."""
    from pipeline.store import open_store

    s = open_store(store_path)
    ex_ids = s.tokens.column("example_id").to_numpy()
    positions = s.tokens.column("position").to_numpy()
    layers = {L: s.layer(L) for L in s.layers}
    worst = 0.0
    for i, text in enumerate(texts):
        ref = _reference(model_dir, text, device, dtype)
        rows = np.flatnonzero(ex_ids == i)
        order = rows[np.argsort(positions[rows])]
        assert len(order) == ref[0].shape[0], f"example {i}: stored {len(order)} tokens, model saw {ref[0].shape[0]}"
        for L in s.layers:
            err = np.abs(layers[L][order].astype(np.float64) - ref[L]).max()
            worst = max(worst, err)
            bound = atol + rtol * np.abs(ref[L]).max()
            assert err < bound, f"example {i} layer {L}: max abs error {err:.3g} (allowed {bound:.3g})"
    return worst


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_every_stored_vector_equals_the_model_run_alone(tiny_models, corpus, tmp_path, family, padding_side, device):
    data = _write_jsonl(tmp_path / "d.jsonl", corpus)
    # A small token budget forces several examples of different lengths into each padded batch, and
    # small shards force several shards with chunk padding between them.
    _extract(tiny_models[family], data, tmp_path / "s.zarr", batch_tokens=64, shard_tokens=40,
             chunk_rows=16, padding_side=padding_side, device=device)
    assert_store_matches_reference(tmp_path / "s.zarr", tiny_models[family], corpus, atol=1e-4, device=device)


def test_static_embeddings_are_the_input_embedding_table(tiny_gpt2, corpus, tmp_path):
    import torch
    from transformers import AutoModel

    from pipeline.store import open_store

    data = _write_jsonl(tmp_path / "d.jsonl", corpus[:2])
    _extract(tiny_gpt2, data, tmp_path / "s.zarr")
    s = open_store(tmp_path / "s.zarr")
    weight = AutoModel.from_pretrained(tiny_gpt2).get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(s.static_embeddings(), weight)
    ids = s.tokens.column("token_id").to_numpy()[:5]
    np.testing.assert_array_equal(s.static_embeddings(ids), weight[ids])


# -- on a GPU: the cast, the range check and the write threads ----------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("device", DEVICES)
def test_a_float16_store_holds_the_forward_rounded_to_float16(tiny_models, corpus, tmp_path, family, device):
    # On a GPU the block is cast on the device (peaks_and_cast), on a CPU by the writer: either way
    # each stored value is the float32 forward's, rounded once (1 float16 step at most from the
    # reference's own rounding, where batching moved the float32 value across a rounding boundary).
    data = _write_jsonl(tmp_path / "d.jsonl", corpus)
    _extract(tiny_models[family], data, tmp_path / "s.zarr", batch_tokens=64, dtype="float16", device=device)
    assert_store_matches_reference(tmp_path / "s.zarr", tiny_models[family], corpus, atol=1e-4, rtol=2 ** -10,
                                   device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_a_bfloat16_model_is_stored_as_float32_without_losing_its_values(tiny_llama, corpus, tmp_path, device):
    # numpy has no bfloat16: the store widens it to float32, which holds every bfloat16 exactly. The
    # reference runs the same bfloat16 weights alone; batching moves bfloat16 arithmetic by a few of
    # its steps (2^-8 relative each).
    import torch

    from pipeline.store import open_store

    data = _write_jsonl(tmp_path / "d.jsonl", corpus)
    _extract(tiny_llama, data, tmp_path / "s.zarr", batch_tokens=64, model_dtype="bfloat16", device=device)
    s = open_store(tmp_path / "s.zarr")
    assert s.manifest["dtype"] == "float32" and s.manifest["model"]["dtype"] == "bfloat16"
    stored = s.layer(s.layers[-1])
    assert np.array_equal(torch.from_numpy(stored).bfloat16().float().numpy(), stored)  # bfloat16 values
    assert_store_matches_reference(tmp_path / "s.zarr", tiny_llama, corpus, atol=1e-3, rtol=2 ** -5,
                                   device=device, dtype=torch.bfloat16)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_overflow_in_a_real_forward_is_refused_naming_the_layer(tiny_gpt2, corpus, tmp_path, device):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.errors import StoreError

    big = tmp_path / "big-gpt2"
    model = AutoModel.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        # The position table, not the token table (the static table would be refused first): layer 0,
        # the embedding output, lies far past 65504 while the static table fits float16.
        model.wpe.weight.mul_(1e7)
    model.save_pretrained(big)
    AutoTokenizer.from_pretrained(tiny_gpt2).save_pretrained(big)
    data = _write_jsonl(tmp_path / "d.jsonl", corpus[:3])
    with pytest.raises(StoreError, match=r"layer 0 has values up to .*outside float16's range"):
        _extract(big, data, tmp_path / "s.zarr", dtype="float16", device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_the_number_of_write_threads_does_not_change_a_single_stored_bit(tiny_bert, corpus, tmp_path, device):
    # A GPU worker writes with a thread per layer (up to its CPU share); the chunks, their checksums
    # and the tables must be those of one thread.
    from pipeline.executors.extract_job import open_or_create, prepare
    from pipeline.extract.forward import ShardExtractor
    from schemas.job import ExtractSpec

    data = _write_jsonl(tmp_path / "d.jsonl", corpus * 3)
    stores = {}
    for threads in (1, 4):
        out = tmp_path / f"t{threads}.zarr"
        p = prepare(ExtractSpec(model=str(tiny_bert), data=str(data), out=str(out), batch_tokens=64,
                                shard_tokens=100, chunk_rows=16, device=device))
        open_or_create(p, overwrite=False)
        worker = ShardExtractor(p.spec, p.target, write_threads=threads)
        worker.setup()
        worker._write_threads = threads  # on a CPU the worker would take 1 thread beside the forward
        for shard in p.plan.shards:
            worker.run_shard(shard, p.source.examples[shard.example_start : shard.example_end])
        stores[threads] = out
    assert len(p.plan.shards) > 1
    for rel in sorted(str(f.relative_to(stores[1])) for f in stores[1].rglob("*")
                      if f.is_file() and ("/c/" in str(f) or "tables" in str(f))):
        assert (stores[1] / rel).read_bytes() == (stores[4] / rel).read_bytes(), rel
    for f in sorted((stores[1] / "meta" / "commits").glob("shard-*.json")):
        a, b = json.loads(f.read_text()), json.loads((stores[4] / "meta" / "commits" / f.name).read_text())
        assert a["chunk_crc32"] == b["chunk_crc32"] and a["table_sha256"] == b["table_sha256"]


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="torch sees no CUDA device")
def test_a_ray_gpu_worker_writes_the_store_the_local_gpu_run_writes(tiny_llama, corpus, tmp_path, request):
    pytest.importorskip("ray")  # a lent GPU machine's check runs without Ray (its wheel cannot travel)
    request.getfixturevalue("ray_cluster")
    from pipeline.executors.extract_job import run_extract
    from pipeline.store import open_store
    from schemas.job import ExtractSpec

    data = _write_jsonl(tmp_path / "d.jsonl", corpus)
    kw = dict(model=str(tiny_llama), data=str(data), batch_tokens=64, shard_tokens=40, device="cuda")
    run_extract(ExtractSpec(out=str(tmp_path / "local.zarr"), **kw), executor="local", progress=False)
    run_extract(ExtractSpec(out=str(tmp_path / "ray.zarr"), **kw), executor="ray", workers=1, progress=False)
    a, b = open_store(tmp_path / "local.zarr"), open_store(tmp_path / "ray.zarr")
    assert all(d.startswith("cuda") for d in b.manifest["written_with"]["device"])
    for L in a.layers:
        np.testing.assert_array_equal(a.layer(L), b.layer(L))
