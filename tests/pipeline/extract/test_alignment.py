import numpy as np

from pipeline.extract.alignment import align_tokens, trim_span
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
    assert trim_span(text, 3, 8) == (4, 8)


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
