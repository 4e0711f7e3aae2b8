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


def test_a_file_that_is_not_a_model_says_what_to_pass_instead(tmp_path):
    script = tmp_path / "notes.py"
    script.write_text("print('not a model')")
    with pytest.raises(LayerprobeError, match="is a file, not a model: pass a Hugging Face model folder"):
        ml.resolve_model(str(script))


def test_the_recorded_architecture_is_the_class_that_runs():
    # A GGUF file's config names no architecture: the manifest said "LlamaConfig"; a checkpoint
    # saved as a head model (LlamaForCausalLM) runs as its base model under AutoModel.
    from transformers import BertConfig, LlamaConfig

    assert ml.model_class_name(LlamaConfig()) == "LlamaModel"
    assert ml.model_class_name(LlamaConfig(architectures=["LlamaForCausalLM"])) == "LlamaModel"
    assert ml.model_class_name(BertConfig()) == "BertModel"


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


def _no_hub_state(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ml._hub_reachable.cache_clear()
    ml._hub_name_cached.cache_clear()
    monkeypatch.setattr(ml, "_hub_reachable", ml._hub_reachable.__wrapped__)
    monkeypatch.setattr(ml, "_hub_name_cached", ml._hub_name_cached.__wrapped__)


def test_an_unreachable_hub_fails_at_once_instead_of_retrying(monkeypatch):
    import socket

    import huggingface_hub.constants
    import transformers

    _no_hub_state(monkeypatch)
    with socket.socket() as s:          # a port nothing listens on: the connect is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda *a, **k: pytest.fail("went to huggingface_hub (and its ~30 s of retries)"))
    with pytest.raises(LayerprobeError, match="not in the local Hugging Face cache.*could not be reached"):
        ml.load_config(ml.resolve_model("some-org/some-model-that-is-not-cached"))


def test_a_cached_hub_name_loads_from_the_cache_without_the_network(monkeypatch, tmp_path, tiny_bert):
    import shutil

    import huggingface_hub.constants

    _no_hub_state(monkeypatch)
    repo = tmp_path / "hub" / "models--some-org--tiny"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_bert, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(ml, "_hub_reachable", lambda: pytest.fail("asked the network for a cached model"))
    ref = ml.resolve_model("some-org/tiny")
    assert ml._hub_kwargs(ref) == {"local_files_only": True}
