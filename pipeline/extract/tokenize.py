"""Encode examples for a variant: ids, character offsets, word alignment, targets, truncation.

The driver encodes everything once to plan shards (exact token counts); each worker re-encodes its
own shard the same way (tokenisation is deterministic), so no token data crosses Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import LayerprobeError
from pipeline.extract.alignment import align_tokens
from pipeline.extract.variants import ModelInput, build_model_input
from pipeline.readers.base import Example


@dataclass
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int] | None
    offsets: list[tuple[int, int]]
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
    where = {i: k for k, i in enumerate(too_long)}
    out = []
    for i, (ex, mi) in enumerate(zip(examples, inputs)):
        src, k = (cut, where[i]) if i in where else (full, i)
        ids = src["input_ids"][k]
        if not ids:
            raise LayerprobeError(f"example {first_example_id + i} encodes to zero tokens: {ex.text[:60]!r}")
        offsets = [tuple(o) for o in src["offset_mapping"][k]]
        special = np.asarray(src["special_tokens_mask"][k], dtype=bool)
        truncated = i in where
        word_id, is_target = align_tokens(
            mi.text, offsets, special, mi.word_spans, mi.target_span,
            target_is_last_token=mi.target_is_last_token and not truncated,
        )
        has_target = ex.target_span is not None
        out.append(Encoded(
            input_ids=list(ids),
            token_type_ids=list(src["token_type_ids"][k]) if "token_type_ids" in src else None,
            offsets=offsets,
            special=special,
            word_id=word_id,
            is_target=is_target,
            model_input=mi,
            truncated=truncated,
            target_found=bool(is_target.any()) if has_target else False,
        ))
    return out
