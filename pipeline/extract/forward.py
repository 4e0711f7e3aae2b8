"""The per-shard step: encode, batch by token budget, forward, hand blocks to the shard writer.

`ShardExtractor` is the one object both executors use: the local executor calls it in-process and the
Ray executor wraps it in an actor. It returns only small metadata; activations go straight from the
forward pass to the store.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa

from pipeline.extract import model_loading
from pipeline.extract.batching import token_budget_batches
from pipeline.extract.heap import return_free_heap
from pipeline.extract.tokenize import Encoded, encode_examples
from pipeline.readers.base import Example
from pipeline.store.writer import ShardWriter, peaks_and_cast, write_static_embeddings
from schemas.job import ExtractSpec
from schemas.manifest import ShardRecord
from schemas.tables import EXAMPLE_FIXED_FIELDS, TOKENS_SCHEMA, source_column

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreTarget:
    """What a worker needs to know about the store it writes into (all small, all picklable)."""

    path: str
    layers: list[int]
    dtype: str
    chunk_rows: int
    max_length: int
    config_fingerprint: str
    storage_options: dict | None = None
    # {source column: Arrow type or JSON_TEXT} over the whole source (schemas.tables.SourceColumnTypes)
    column_types: dict | None = None


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from pipeline.errors import LayerprobeError

        raise LayerprobeError("--device cuda was requested but torch sees no CUDA device "
                              "(is the CUDA build of torch installed? see README)")
    return requested


# Beside a GPU, the writer's threads per worker: ~0.5 GB/s of float32 each here (benchmarks/README.md);
# 8 are about what one GPU's share of a node's disk takes, and 8 GPUs x 8 fit usual GPU nodes' cores.
MAX_WRITE_THREADS = 8


class ShardExtractor:
    def __init__(self, spec: ExtractSpec, target: StoreTarget, write_threads: int | None = None):
        self.spec = spec
        self.target = target
        self.model = None
        self._gpu_write_threads = write_threads  # the Ray executor's CPU share per GPU; None: the cores here

    def setup(self) -> None:
        import torch

        if self.model is not None:
            return
        self.device = pick_device(self.spec.device)
        ref = model_loading.resolve_model(self.spec.model)
        self.tokenizer = model_loading.load_tokenizer(ref, self.spec.trust_remote_code)
        if self.spec.padding_side != "auto":
            self.tokenizer.padding_side = self.spec.padding_side
        self.model = model_loading.load_model(
            ref, model_dtype=self.spec.model_dtype, device=self.device,
            trust_remote_code=self.spec.trust_remote_code, allow_pickle=self.spec.allow_pickle,
        )
        params = inspect.signature(self.model.forward).parameters
        self._takes_position_ids = "position_ids" in params
        self._takes_token_type_ids = "token_type_ids" in params
        self._pin = self.device.startswith("cuda")
        self._copy_stream = torch.cuda.Stream() if self._pin else None
        # Beside a CPU forward pass one writer thread (it takes cores from the forward); beside a GPU
        # up to a thread per layer, within the worker's CPU share.
        share = self._gpu_write_threads or min(MAX_WRITE_THREADS, os.cpu_count() or 1)
        self._write_threads = 1 if not self._pin else min(len(self.target.layers), share)
        import transformers

        self.written_with = {  # recorded in each commit record: they move float rounding, not values
            "batch_tokens": self.spec.batch_tokens, "padding_side": self.tokenizer.padding_side,
            "device": f"cuda ({torch.cuda.get_device_name(self.device)})" if self._pin else self.device,
            "attention": self._attention_name(),
            "torch": torch.__version__, "transformers": transformers.__version__,
        }
        if not self._pin:
            # A CPU matrix product of a few rows (a shard's last, small batch) rounds differently on
            # 1 and 2 threads (MiniLM: ~1e-6), and the Ray executor splits the cores between workers.
            self.written_with["torch_threads"] = torch.get_num_threads()
        # torch, transformers and the model leave ~460k objects for the cyclic GC to walk: each full
        # collection (every few shards, from the encodings' lists) took ~0.2 s. Frozen, they are
        # never walked again; they live as long as the worker anyway (collected first, so no garbage
        # is frozen with them).
        gc.collect()
        gc.freeze()

    def _attention_name(self) -> str:
        impl = str(getattr(self.model.config, "_attn_implementation", None))
        # On CPU, SDPA runs under thread_invariant_attention's math kernel.
        return f"{impl}/math" if impl == "sdpa" and not self._pin else impl

    # -- static table ------------------------------------------------------------------------------
    def write_static(self) -> dict:
        self.setup()
        weight = self.model.get_input_embeddings().weight.detach().float().cpu().numpy()
        write_static_embeddings(self.target.path, weight, fingerprint=self.target.config_fingerprint,
                                storage_options=self.target.storage_options)
        return {"shard_id": "static", "rows": int(weight.shape[0])}

    # -- one shard -------------------------------------------------------------------------------
    def run_shard(self, shard: ShardRecord, examples: Sequence[Example]) -> dict:
        self.setup()
        t0 = time.perf_counter()
        examples = list(examples)  # decode a compact part once; the tables below walk it several times
        spec, target = self.spec, self.target
        encoded = encode_examples(self.tokenizer, examples, spec.variant, target.max_length,
                                  first_example_id=shard.example_start)
        kept = [e.kept(spec.keep) for e in encoded]
        writer = ShardWriter(target.path, shard, layers=target.layers, dtype=target.dtype,
                             chunk_rows=target.chunk_rows, config_fingerprint=target.config_fingerprint,
                             storage_options=target.storage_options, write_threads=self._write_threads,
                             written_with=self.written_with)
        written: list[int] = []  # examples in the order their rows were written
        try:
            for batch in token_budget_batches([len(e) for e in encoded], spec.batch_tokens):
                batch = [i for i in batch if len(kept[i])]
                if not batch:
                    continue
                writer.submit(*self._forward(encoded, kept, batch))
                written.extend(batch)
            tokens = build_tokens_table(encoded, kept, written, self.tokenizer,
                                        first_example_id=shard.example_start, first_row=shard.row_start)
            examples_table = build_examples_table(examples, encoded, shard, target.column_types)
            writer.finish(tokens, examples_table)
        except BaseException:
            writer.abort()
            raise
        finally:
            return_free_heap()
        return {
            "shard_id": shard.shard_id,
            "n_tokens": shard.n_tokens,
            "n_examples": len(examples),
            "n_truncated": sum(e.truncated for e in encoded),
            "seconds": time.perf_counter() - t0,
        }

    def _forward(self, encoded: list[Encoded], kept: list[np.ndarray], batch: list[int]):
        import torch

        pad_id = self.tokenizer.pad_token_id
        left = self.tokenizer.padding_side == "left"
        lengths = np.array([len(encoded[i]) for i in batch])
        longest = int(lengths.max())
        # Build the padded batch in numpy with one scatter (per-example torch.tensor calls cost ~2% of
        # MiniLM's forward on CPU).
        starts = longest - lengths if left else np.zeros_like(lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # 0..n-1 each
        rows = np.repeat(np.arange(len(batch)), lengths)
        cols = within + np.repeat(starts, lengths)
        ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
        ids[rows, cols] = np.concatenate([encoded[i].input_ids for i in batch])
        mask = np.zeros((len(batch), longest), dtype=np.int64)
        mask[rows, cols] = 1
        has_types = encoded[batch[0]].token_type_ids is not None
        if has_types:
            types = np.zeros((len(batch), longest), dtype=np.int64)
            types[rows, cols] = np.concatenate([encoded[i].token_type_ids for i in batch])
        b_idx = np.concatenate([np.full(len(kept[i]), b) for b, i in enumerate(batch)])
        t_idx = np.concatenate([kept[i] + starts[b] for b, i in enumerate(batch)])
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self._takes_position_ids:
            # Each real token gets the position it has when the example runs alone, whichever side
            # the padding is on (models like Llama would otherwise count left padding as positions).
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if self._takes_token_type_ids and has_types:
            inputs["token_type_ids"] = torch.from_numpy(types)
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        flat = torch.as_tensor(b_idx * longest + t_idx, device=self.device)  # row in [batch * longest]
        with torch.inference_mode(), thread_invariant_attention(self.device):
            out = self.model(**inputs, output_hidden_states=True, return_dict=True)
            # Gather only the stored tokens on the device (padding never leaves it), each layer
            # straight into its slot of the block: one copy, not gather + stack.
            hidden = out.hidden_states
            block = torch.empty((len(self.target.layers), len(flat), hidden[0].shape[-1]),
                                dtype=hidden[0].dtype, device=hidden[0].device)
            for slot, L in enumerate(self.target.layers):
                torch.index_select(hidden[L].reshape(-1, hidden[L].shape[-1]), 0, flat, out=block[slot])
            if self._pin:  # GPU: range-check and cast on the device (the writer's CPU is the bound there)
                peaks, block = peaks_and_cast(block, self.target.dtype)
        if not self._pin:
            return block, None, None
        # GPU: copy into pinned host memory on a side stream without blocking; the writer thread
        # waits on the event, so the next batch's forward overlaps this copy and the disk write.
        host = torch.empty(block.shape, dtype=block.dtype, pin_memory=True)
        host_peaks = torch.empty(peaks.shape, dtype=peaks.dtype, pin_memory=True)
        self._copy_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._copy_stream):
            host.copy_(block, non_blocking=True)
            host_peaks.copy_(peaks, non_blocking=True)
            block.record_stream(self._copy_stream)
            peaks.record_stream(self._copy_stream)
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        return host, ready, host_peaks


def thread_invariant_attention(device: str):
    """On CPU, torch's fused (flash) SDPA kernel does not round the same under 1 and 2 intra-op
    threads for every shape, and the Ray executor gives each worker cpus // workers threads: the
    store would depend on the worker count. Measured with torch 2.13 on a 2-core AMD EPYC VM: head_dim
    8 with odd sequence lengths 9-31 differs by up to 2.4e-7 (the tiny test models hit it);
    MiniLM's and GPT-2's shapes happened to agree, which no one can promise for every model and
    CPU. The math backend rounds the same for any thread count. It costs 1-4% of MiniLM's CPU forward.
    The attention kernel is not the only thread-dependent op: a matrix product of a few rows (M < 16
    measured, e.g. a one-sentence batch) splits its reduction across threads, so stores of different
    thread counts agree to ~1e-6 there, and written_with records the thread count. GPUs are untouched (one
    worker per GPU)."""
    import contextlib

    if device.startswith("cuda"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def build_tokens_table(encoded: list[Encoded], kept: list[np.ndarray], order: list[int], tokenizer,
                       first_example_id: int, first_row: int) -> pa.Table:
    """One row per stored token, in the order the rows were written (`order`: example indices).

    Built from concatenated arrays with one token-string lookup for the whole shard: per example
    list appends cost ~1.5% of MiniLM's CPU forward."""
    if not order:
        return TOKENS_SCHEMA.empty_table()
    n_in = np.array([len(encoded[i]) for i in order], dtype=np.int64)
    n_kept = np.array([len(kept[i]) for i in order], dtype=np.int64)
    base = np.cumsum(n_in) - n_in  # where each example starts in the concatenated inputs
    positions = np.concatenate([kept[i] for i in order]).astype(np.int64)
    pick = positions + np.repeat(base, n_kept)
    token_ids = np.fromiter(chain.from_iterable(encoded[i].input_ids for i in order),
                            dtype=np.int64, count=int(n_in.sum()))[pick]
    offsets = np.concatenate([encoded[i].offsets for i in order])[pick]
    cols = {
        "example_id": np.repeat(np.asarray(order, dtype=np.int64) + first_example_id, n_kept),
        "position": positions,
        "row": np.arange(first_row, first_row + len(pick), dtype=np.int64),
        "token_id": token_ids,
        "token": tokenizer.convert_ids_to_tokens(token_ids.tolist()),
        "char_start": offsets[:, 0],
        "char_end": offsets[:, 1],
        "word_id": np.concatenate([encoded[i].word_id for i in order])[pick],
        "special": np.concatenate([encoded[i].special for i in order])[pick],
        "is_target": np.concatenate([encoded[i].is_target for i in order])[pick],
    }
    return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in TOKENS_SCHEMA}, schema=TOKENS_SCHEMA)


def build_examples_table(examples: list[Example], encoded: list[Encoded], shard: ShardRecord,
                         column_types: dict | None = None) -> pa.Table:
    """One row per example of the shard: the fixed columns, then the source's own, each source
    column typed as `column_types` says for the whole source (else inferred from this shard)."""
    cols: dict[str, list] = {
        "example_id": list(range(shard.example_start, shard.example_end)),
        "shard_id": [shard.shard_id] * len(examples),
        "text": [ex.text for ex in examples],
        "input_text": [e.model_input.text for e in encoded],
        "words": [list(ex.words) for ex in examples],
        "word_char_start": [[s for s, _ in e.model_input.word_spans] for e in encoded],
        "word_char_end": [[t for _, t in e.model_input.word_spans] for e in encoded],
        "target_char_start": [None if ex.target_span is None else ex.target_span[0] for ex in examples],
        "target_char_end": [None if ex.target_span is None else ex.target_span[1] for ex in examples],
        "target_word_id": [ex.target_word_id for ex in examples],
        "n_tokens": [len(e) for e in encoded],
        "truncated": [e.truncated for e in encoded],
        "target_found": [e.target_found for e in encoded],
    }
    types = {f.name: f.type for f in EXAMPLE_FIXED_FIELDS}
    arrays = {name: pa.array(values, type=types[name]) for name, values in cols.items()}
    keys = list(column_types) if column_types is not None else dict.fromkeys(k for ex in examples for k in ex.columns)
    for key in keys:
        # Source columns keep their names, unless one would shadow a fixed column.
        values = [ex.columns.get(key) for ex in examples]
        kind = (column_types or {}).get(key)
        arrays[f"source_{key}" if key in types else key] = (source_column(values, kind) if kind is not None
                                                            else pa.array(values))
    return pa.table(arrays)
