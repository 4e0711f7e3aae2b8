"""Model resolution and loading rules: offline hub names, safetensors only, the default model."""

from __future__ import annotations

import pytest

from pipeline.errors import LayerprobeError
from pipeline.extract import model_loading as ml


def test_a_hub_name_offline_says_so_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = ml.resolve_model("some-org/some-model-that-is-not-cached")
    assert not ref.is_local
    with pytest.raises(LayerprobeError, match="not a local path.*HF_HUB_OFFLINE is set"):
        ml.load_config(ref)


def test_a_missing_local_path_is_not_mistaken_for_a_hub_name(tmp_path):
    with pytest.raises(LayerprobeError, match="model path not found"):
        ml.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(LayerprobeError, match="model file not found"):
        ml.resolve_model(str(tmp_path / "nope.gguf"))


def test_pickled_checkpoints_load_only_with_allow_pickle(tiny_gpt2, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    for f in tiny_gpt2.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    # The classic pickled checkpoint: loading it runs the unpickler, which can execute code.
    torch.save(load_file(tiny_gpt2 / "model.safetensors"), tmp_path / "pytorch_model.bin")
    assert not list(tmp_path.glob("*.safetensors"))
    ref = ml.resolve_model(str(tmp_path))
    with pytest.raises(LayerprobeError, match="--allow-pickle"):
        ml.load_model(ref)
    assert ml.load_model(ref, allow_pickle=True) is not None


def test_the_default_model_is_the_bundled_minilm():
    ref = ml.resolve_model("default")
    assert (ml.default_model_dir() / "model.safetensors").is_file()
    assert ref.location == str(ml.default_model_dir())
    assert ml.display_name("default").startswith("sentence-transformers/all-MiniLM-L6-v2")


def test_content_hash_identifies_weights_not_their_location(tiny_gpt2, tmp_path):
    import shutil

    shutil.copytree(tiny_gpt2, tmp_path / "copy")
    a = ml.model_content_hash(ml.resolve_model(str(tiny_gpt2)))
    b = ml.model_content_hash(ml.resolve_model(str(tmp_path / "copy")))
    assert a == b
