"""Token -> word alignment from character offsets (pure; no tokenizer needed).

Byte-level BPE and SentencePiece tokens often include the space before a word in their offsets
(" bank" -> (3, 8)), so a token's span is trimmed of leading/trailing whitespace before it is matched
against word spans.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def align_tokens(
    text: str,
    offsets: Sequence[tuple[int, int]],
    special: Sequence[bool],
    word_spans: Sequence[tuple[int, int]],
    target_span: tuple[int, int] | None,
    target_is_last_token: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (word_id int32[n], is_target bool[n]) for the n tokens.

    A token belongs to the first word its trimmed span overlaps; special tokens and tokens outside
    every word (template text, the first copy of a repeat) get -1. `word_spans` must be sorted.
    """
    n = len(offsets)
    word_id = np.full(n, -1, dtype=np.int32)
    is_target = np.zeros(n, dtype=bool)
    starts = [s for s, _ in word_spans]
    for i, ((s, e), sp) in enumerate(zip(offsets, special)):
        if sp:
            continue
        s, e = trim_span(text, s, e)
        if e <= s:
            continue
        w = bisect_right(starts, s) - 1  # last word starting at or before the token
        if w >= 0 and s < word_spans[w][1]:
            word_id[i] = w
        elif w + 1 < len(word_spans) and word_spans[w + 1][0] < e:
            word_id[i] = w + 1  # token starts in a gap but reaches into the next word
        if target_span is not None and s < target_span[1] and target_span[0] < e:
            is_target[i] = True
    if target_is_last_token:
        # The prompt's final token (the opening quote of the answer); trailing special tokens such as
        # BERT's [SEP] are skipped, since the model never reads on from them.
        real = [i for i in range(n) if not special[i]]
        if real:
            is_target[real[-1]] = True
    return word_id, is_target
