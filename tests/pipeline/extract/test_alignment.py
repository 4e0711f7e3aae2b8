from bisect import bisect_right

import numpy as np
import pytest

from pipeline.extract.alignment import SPACE_CODEPOINTS, align_batch, align_tokens
from pipeline.extract.batching import token_budget_batches
from pipeline.extract.variants import PROMPT_PREFIX, build_model_input
from pipeline.readers.base import Example


def _example(text, target_word_id=None):
    import re

    spans = tuple((m.start(), m.end()) for m in re.finditer(r"\S+", text))
    words = tuple(text[s:e] for s, e in spans)
    target = spans[target_word_id] if target_word_id is not None else None
    return Example(text=text, words=words, word_spans=spans, target_span=target, target_word_id=target_word_id)


def test_leading_space_of_bpe_tokens_is_trimmed_before_matching_words():
    text = "The bank of"
    # byte-level BPE offsets: " bank" includes the space
    offsets = [(0, 3), (3, 8), (8, 11)]
    words, target = align_tokens(text, offsets, [False] * 3, [(0, 3), (4, 8), (9, 11)], (4, 8))
    assert words.tolist() == [0, 1, 2]
    assert target.tolist() == [False, True, False]


def test_subwords_share_their_word_and_special_tokens_get_minus_one():
    text = "unbelievable news"
    offsets = [(0, 0), (0, 2), (2, 9), (9, 12), (13, 17), (0, 0)]
    special = [True, False, False, False, False, True]
    words, target = align_tokens(text, offsets, special, [(0, 12), (13, 17)], (0, 12))
    assert words.tolist() == [-1, 0, 0, 0, 1, -1]
    assert target.tolist() == [False, True, True, True, False, False]


def test_prompt_target_is_the_last_non_special_token():
    ex = _example("the bank closed", target_word_id=1)
    mi = build_model_input(ex, "prompt")
    assert mi.text.startswith(PROMPT_PREFIX) and mi.text.endswith('means in one word: "')
    assert mi.text[mi.word_spans[1][0] : mi.word_spans[1][1]] == "bank"
    offsets = [(0, 0), (0, 5), (5, len(mi.text)), (0, 0)]
    _, target = align_tokens(mi.text, offsets, [True, False, False, True], mi.word_spans, None, True)
    assert target.tolist() == [False, False, True, False]


def test_repeat_variant_points_words_and_target_at_the_second_copy():
    ex = _example("a bank here", target_word_id=1)
    mi = build_model_input(ex, "repeat")
    assert mi.text == "a bank here a bank here"
    assert mi.target_span == (14, 18) and mi.text[14:18] == "bank"
    assert mi.word_spans[0] == (12, 13)


def test_token_budget_batches_respect_the_budget_and_sort_by_length():
    lengths = [5, 30, 7, 30, 2, 100]
    batches = token_budget_batches(lengths, 64)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 64
    assert batches[0] == [5]  # longer than the budget: alone, and first
    assert [lengths[i] for i in batches[1]] == [30, 30]


def _trim(text, start, end):
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _align_one_token_at_a_time(text, offsets, special, word_spans, target_span, target_is_last_token):
    """The rule written as the obvious per-token loop: the specification align_batch must equal."""
    word_id, is_target = [-1] * len(offsets), [False] * len(offsets)
    starts = [s for s, _ in word_spans]
    for i, ((s, e), sp) in enumerate(zip(offsets, special)):
        s, e = _trim(text, s, e)
        if sp or e <= s:
            continue
        w = bisect_right(starts, s) - 1
        if w >= 0 and s < word_spans[w][1]:
            word_id[i] = w
        elif w + 1 < len(word_spans) and word_spans[w + 1][0] < e:
            word_id[i] = w + 1
        is_target[i] = target_span is not None and s < target_span[1] and target_span[0] < e
    real = [i for i, sp in enumerate(special) if not sp]
    if target_is_last_token and real:
        is_target[real[-1]] = True
    return word_id, is_target


def test_space_codepoints_are_exactly_what_str_isspace_says():
    assert sorted(SPACE_CODEPOINTS.tolist()) == [c for c in range(0x110000) if chr(c).isspace()]


@pytest.mark.parametrize("variant", ["base", "repeat", "prompt"])
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_a_whole_batch_aligns_exactly_like_one_token_at_a_time(tiny_models, variant, family):
    """Real WiC and UD sentences, three tokenizer styles (WordPiece, byte-level BPE with the space
    inside tokens, SentencePiece), plus texts with odd whitespace and words the tokenizer splits."""
    from transformers import AutoTokenizer

    from pipeline.readers import read_source
    from pipeline.samples import SAMPLES_DIR

    examples = list(read_source(str(SAMPLES_DIR / "wic")).examples)[:150]
    examples += list(read_source(str(SAMPLES_DIR / "ud-english-ewt")).examples)[:50]
    for text in ("  leading\tand\u00a0odd \u3000 spaces  ", "x", "Unbelievably\n\nsplit — words!"):
        examples.append(_example(text, target_word_id=0))
    if variant == "prompt":
        examples = [ex for ex in examples if ex.target_span is not None]
    tok = AutoTokenizer.from_pretrained(tiny_models[family])
    inputs = [build_model_input(ex, variant) for ex in examples]
    enc = tok([mi.text for mi in inputs], return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets, special = enc["offset_mapping"], enc["special_tokens_mask"]
    n = [len(o) for o in offsets]
    words, targets = align_batch([mi.text for mi in inputs], np.array([p for o in offsets for p in o]),
                                 np.array([b for m in special for b in m], dtype=bool), n,
                                 [mi.word_spans for mi in inputs], [mi.target_span for mi in inputs],
                                 [mi.target_is_last_token for mi in inputs])
    assert sum(n) > 1000
    for k, mi in enumerate(inputs):
        want_words, want_targets = _align_one_token_at_a_time(mi.text, offsets[k], special[k], mi.word_spans,
                                                              mi.target_span, mi.target_is_last_token)
        assert words[k].tolist() == want_words, mi.text
        assert targets[k].tolist() == want_targets, mi.text
    if variant == "base":  # the other variants add template text or a first copy, in no word
        assert np.mean(np.concatenate(words) >= 0) > 0.5
    assert any(t.any() for t in targets)


def test_random_spans_align_exactly_like_one_token_at_a_time():
    """Offsets no tokenizer would produce: tokens starting in gaps, all-space tokens, word and
    target spans that begin on a space, texts without words or tokens."""
    rng = np.random.default_rng(0)
    texts, offsets, special, n, words, targets, last = [], [], [], [], [], [], []
    for _ in range(400):
        text = "".join(rng.choice(list("ab- \t\u00a0\u3000"), size=rng.integers(0, 25)))
        cuts = sorted(set(rng.integers(0, len(text) + 1, size=2 * rng.integers(0, 5)).tolist()))
        spans = [(s, e) for s, e in zip(cuts[::2], cuts[1::2])]
        toks = [tuple(sorted(rng.integers(0, len(text) + 1, size=2).tolist())) for _ in range(rng.integers(0, 8))]
        target = tuple(sorted(rng.integers(0, len(text) + 1, size=2).tolist())) if rng.random() < 0.7 else None
        texts.append(text)
        words.append(spans)
        targets.append(target)
        last.append(bool(rng.random() < 0.3))
        offsets += toks
        special += (rng.random(len(toks)) < 0.2).tolist()
        n.append(len(toks))
    got_words, got_targets = align_batch(texts, np.array(offsets, dtype=np.int64).reshape(-1, 2),
                                         np.array(special, dtype=bool), n, words, targets, last)
    at = 0
    for k, text in enumerate(texts):
        want = _align_one_token_at_a_time(text, offsets[at : at + n[k]], special[at : at + n[k]], words[k],
                                          targets[k], last[k])
        assert (got_words[k].tolist(), got_targets[k].tolist()) == want, (text, words[k], offsets[at : at + n[k]])
        at += n[k]
