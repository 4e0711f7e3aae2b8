"""Every stored vector equals model(**enc, output_hidden_states=True).hidden_states[L] for that example
run alone, whatever the batching and padding side."""

from __future__ import annotations

import json

import numpy as np
import pytest



def _write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t, "idx": i}) + "\n" for i, t in enumerate(texts)))
    return path


def _reference(model_dir, text):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(text, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc, output_hidden_states=True)
    return [h[0].numpy() for h in out.hidden_states]


def _extract(model_dir, data, out, **kw):
    from pipeline.executors.extract_job import run_extract
    from schemas.job import ExtractSpec

    spec = ExtractSpec(model=str(model_dir), data=str(data), out=str(out), **kw)
    return run_extract(spec, executor="local", progress=False)


def assert_store_matches_reference(store_path, model_dir, texts, atol):
    from pipeline.store import open_store

    s = open_store(store_path)
    tokens = s.tokens.to_pandas() if hasattr(s.tokens, "to_pandas") else None
    ex_ids = s.tokens.column("example_id").to_numpy()
    positions = s.tokens.column("position").to_numpy()
    layers = {L: s.layer(L) for L in s.layers}
    worst = 0.0
    for i, text in enumerate(texts):
        ref = _reference(model_dir, text)
        rows = np.flatnonzero(ex_ids == i)
        order = rows[np.argsort(positions[rows])]
        assert len(order) == ref[0].shape[0], f"example {i}: stored {len(order)} tokens, model saw {ref[0].shape[0]}"
        for L in s.layers:
            err = np.abs(layers[L][order].astype(np.float64) - ref[L]).max()
            worst = max(worst, err)
            assert err < atol, f"example {i} layer {L}: max abs error {err:.3g}"
    return worst


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_every_stored_vector_equals_the_model_run_alone(tiny_models, corpus, tmp_path, family, padding_side):
    data = _write_jsonl(tmp_path / "d.jsonl", corpus)
    # A small token budget forces several examples of different lengths into each padded batch, and
    # small shards force several shards with chunk padding between them.
    _extract(tiny_models[family], data, tmp_path / "s.zarr", batch_tokens=64, shard_tokens=40,
             chunk_rows=16, padding_side=padding_side)
    assert_store_matches_reference(tmp_path / "s.zarr", tiny_models[family], corpus, atol=1e-4)


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
