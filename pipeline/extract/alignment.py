"""Token -> word alignment from character offsets (pure; no tokenizer needed).

Byte-level BPE and SentencePiece tokens often include the space before a word in their offsets
(" bank" -> (3, 8)), so a token's span is trimmed of leading/trailing whitespace before it is matched
against word spans. A whole shard is aligned in one pass over concatenated arrays: a per-token
Python loop cost ~1% of MiniLM's CPU forward (benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Exactly the characters `str.isspace()` is true for (checked by a test against all of Unicode).
SPACE_CODEPOINTS = np.array(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
     0x2028, 0x2029, 0x202F, 0x205F, 0x3000], dtype=np.uint32)


def align_tokens(
    text: str,
    offsets: Sequence[tuple[int, int]],
    special: Sequence[bool],
    word_spans: Sequence[tuple[int, int]],
    target_span: tuple[int, int] | None,
    target_is_last_token: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (word_id int32[n], is_target bool[n]) for the n tokens of one text (see align_batch)."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    (word_id,), (is_target,) = align_batch([text], offsets, np.asarray(special, dtype=bool), [len(offsets)],
                                           [word_spans], [target_span], [target_is_last_token])
    return word_id, is_target


def align_batch(
    texts: Sequence[str],
    offsets: np.ndarray,
    special: np.ndarray,
    n_tokens: Sequence[int],
    word_spans: Sequence[Sequence[tuple[int, int]]],
    target_spans: Sequence[tuple[int, int] | None],
    target_is_last_token: Sequence[bool],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Word ids (int32, -1 for none) and target flags for the tokens of many texts at once.

    `offsets` ([N, 2] character offsets into each token's own text) and `special` ([N]) hold every
    text's tokens one after another, `n_tokens` of them per text. A token belongs to the first word
    its trimmed span overlaps; special tokens and tokens outside every word (template text, the
    first copy of a repeat) get -1. Each text's `word_spans` must be sorted. A token is a target if
    its trimmed span overlaps the text's target span; with `target_is_last_token` (the prompt
    variant) the text's last non-special token is one too: trailing special tokens such as BERT's
    [SEP] are skipped, since the model never reads on from them.
    """
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    text_len = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    text_base = np.cumsum(text_len) - text_len
    text_of = np.repeat(np.arange(len(texts)), n_tokens)  # each token's text
    # Trim in global character coordinates (all texts concatenated), with two lookup tables:
    # the first non-space at or after i, and one past the last non-space before i.
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    solid = ~np.isin(codes, SPACE_CODEPOINTS)
    total = len(codes)
    at = np.arange(total + 1)
    next_solid = np.minimum.accumulate(np.where(np.append(solid, True), at, total)[::-1])[::-1]
    after_last_solid = np.maximum.accumulate(np.where(np.insert(solid, 0, False), at, 0))
    base = text_base[text_of]
    start, end = offsets[:, 0] + base, offsets[:, 1] + base
    start = np.minimum(next_solid[start], end)
    end = np.maximum(after_last_solid[end], start)
    real = ~special & (end > start)

    # Words of every text in the same global coordinates; sorted, since the texts do not overlap.
    n_words = np.fromiter((len(w) for w in word_spans), dtype=np.int64, count=len(texts))
    first_word = np.cumsum(n_words) - n_words
    spans = np.array([s for w in word_spans for s in w], dtype=np.int64).reshape(-1, 2)
    spans += np.repeat(text_base, n_words)[:, None]
    w_lo, w_hi = first_word[text_of], (first_word + n_words)[text_of]  # this text's words: [lo, hi)
    w = np.clip(np.searchsorted(spans[:, 0], start, side="right") - 1, w_lo - 1, w_hi - 1)
    # The last word starting at or before the token, if the token starts inside it; else the next
    # word, if the token starts in a gap but reaches into it. (Indices are clipped for the lookup
    # only; the masks say which lookups count.)
    if len(spans):
        top = len(spans) - 1
        inside = (w >= w_lo) & (start < spans[np.clip(w, 0, top), 1])
        reaches = (w + 1 < w_hi) & (spans[np.clip(w + 1, 0, top), 0] < end)
    else:
        inside = reaches = np.zeros(len(w), dtype=bool)
    word = np.where(inside, w, np.where(reaches, w + 1, -1))
    word_id = np.where(real & (word >= 0), word - w_lo, -1).astype(np.int32)

    has_target = np.array([t is not None for t in target_spans], dtype=bool)
    targets = np.array([t if t is not None else (0, 0) for t in target_spans], dtype=np.int64).reshape(-1, 2)
    t_start, t_end = targets[text_of, 0] + base, targets[text_of, 1] + base
    is_target = real & has_target[text_of] & (start < t_end) & (t_start < end)
    last_flag = np.asarray(target_is_last_token, dtype=bool)
    if last_flag.any():
        index = np.where(~special, np.arange(len(special)), -1)
        token_start = np.cumsum(n_tokens) - n_tokens
        nonempty = n_tokens > 0
        last = np.full(len(texts), -1)
        last[nonempty] = np.maximum.reduceat(index, token_start[nonempty])
        is_target[last[last_flag & (last >= 0)]] = True
    return split_rows(word_id, n_tokens), split_rows(is_target, n_tokens)


def split_rows(values: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Views of consecutive runs of `counts` rows (np.split is ~10x slower for many small pieces)."""
    ends = np.cumsum(counts).tolist()
    return [values[e - c : e] for e, c in zip(ends, np.asarray(counts).tolist())]
