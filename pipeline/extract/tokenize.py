"""Encode examples for a variant: ids, character offsets, word alignment, targets, truncation.

The driver encodes everything once to plan shards (exact token counts); each worker re-encodes its
own shard the same way (tokenisation is deterministic), so no token data crosses Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np

from pipeline.errors import LayerprobeError
from pipeline.extract.alignment import align_batch, split_rows
from pipeline.extract.variants import ModelInput, build_model_input
from pipeline.readers.base import Example


@dataclass
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int] | None
    offsets: np.ndarray            # int64[n, 2]: character offsets into model_input.text
    special: np.ndarray            # bool[n]
    word_id: np.ndarray            # int32[n]
    is_target: np.ndarray          # bool[n]
    model_input: ModelInput
    truncated: bool
    target_found: bool

    def __len__(self) -> int:
        return len(self.input_ids)

    def kept(self, keep: str) -> np.ndarray:
        """Positions stored for this example: every token, or only the target's."""
        if keep == "all":
            return np.arange(len(self.input_ids))
        return np.flatnonzero(self.is_target)


def encode_examples(tokenizer, examples: list[Example], variant: str, max_length: int,
                    first_example_id: int = 0) -> list[Encoded]:
    if not examples:
        return []
    inputs = [build_model_input(ex, variant) for ex in examples]
    texts = [mi.text for mi in inputs]
    # Tokenise without truncation first to learn which texts are too long (they are flagged, never
    # silently cut), then re-encode just those with truncation so special tokens stay at the end.
    full = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True,
                     return_special_tokens_mask=True, truncation=False, verbose=False)
    too_long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_length]
    cut = None
    if too_long:
        cut = tokenizer([texts[i] for i in too_long], add_special_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True, truncation=True, max_length=max_length)
        # A tokenizer asked for fewer tokens than its special tokens returns the text whole (only a
        # log warning): stored rows would then not match the manifest's max_length.
        longest = max(len(ids) for ids in cut["input_ids"])
        if longest > max_length:
            raise LayerprobeError(f"max_length {max_length} is too small for this tokenizer: cut to it, an "
                                  f"example still has {longest} tokens (special tokens are never cut); "
                                  "use a larger --max-length")
    where = {i: k for k, i in enumerate(too_long)}
    picked = [(cut, where[i]) if i in where else (full, i) for i in range(len(examples))]
    for i, (src, k) in enumerate(picked):
        if not src["input_ids"][k]:
            raise LayerprobeError(f"example {first_example_id + i} encodes to zero tokens: {examples[i].text[:60]!r}")
    offsets = [src["offset_mapping"][k] for src, k in picked]
    specials = [src["special_tokens_mask"][k] for src, k in picked]
    n_tokens = [len(o) for o in offsets]
    total = sum(n_tokens)
    flat_offsets = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64,
                               count=2 * total).reshape(-1, 2)
    flat_special = np.fromiter(chain.from_iterable(specials), dtype=bool, count=total)
    word_ids, is_targets = align_batch(
        texts, flat_offsets, flat_special, n_tokens, [mi.word_spans for mi in inputs],
        [mi.target_span for mi in inputs],
        [mi.target_is_last_token and i not in where for i, mi in enumerate(inputs)],
    )
    # Per-example views of the flat arrays: no per-token Python tuples to build, or to flatten again.
    offset_rows, special_rows = split_rows(flat_offsets, n_tokens), split_rows(flat_special, n_tokens)
    out = []
    for i, (ex, (src, k)) in enumerate(zip(examples, picked)):
        is_target = is_targets[i]
        out.append(Encoded(
            input_ids=list(src["input_ids"][k]),
            token_type_ids=list(src["token_type_ids"][k]) if "token_type_ids" in src else None,
            offsets=offset_rows[i],
            special=special_rows[i],
            word_id=word_ids[i],
            is_target=is_target,
            model_input=inputs[i],
            truncated=i in where,
            target_found=bool(is_target.any()) if ex.target_span is not None else False,
        ))
    return out
