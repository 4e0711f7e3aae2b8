"""The tokens table a shard commits: one row per stored token, in the order its rows were written."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.extract import model_loading
from pipeline.extract.forward import build_tokens_table
from pipeline.extract.tokenize import encode_examples
from pipeline.readers.base import Example
from schemas.tables import TOKENS_SCHEMA


def _example(text: str, target: str | None = None) -> Example:
    words = tuple(text.split())
    spans, at = [], 0
    for w in words:
        at = text.index(w, at)
        spans.append((at, at + len(w)))
        at += len(w)
    span = None if target is None else (text.index(target), text.index(target) + len(target))
    return Example(text=text, words=words, word_spans=tuple(spans), target_span=span)


@pytest.fixture(scope="module")
def encoded(tiny_bert):
    tok = model_loading.load_tokenizer(model_loading.resolve_model(str(tiny_bert)), False)
    examples = [_example("the bank of the river", "bank"), _example("a short one", "short"),
                _example("money in the bank today", "bank")]
    return tok, encode_examples(tok, examples, "base", 64, first_example_id=10)


@pytest.mark.parametrize("keep", ["all", "targets"])
def test_rows_follow_the_written_order_and_match_each_example(encoded, keep):
    tok, enc = encoded
    kept = [e.kept(keep) for e in enc]
    order = [2, 0, 1]  # batches are length-sorted, so rows are not in example order
    table = build_tokens_table(enc, kept, order, tok, first_example_id=10, first_row=700)
    assert table.schema == TOKENS_SCHEMA
    expected_ids = np.concatenate([np.full(len(kept[i]), 10 + i) for i in order])
    assert table.column("example_id").to_pylist() == expected_ids.tolist()
    assert table.column("row").to_pylist() == list(range(700, 700 + len(table)))
    at = 0
    for i in order:
        rows = table.slice(at, len(kept[i]))
        at += len(kept[i])
        positions = kept[i].tolist()
        assert rows.column("position").to_pylist() == positions
        assert rows.column("token_id").to_pylist() == [enc[i].input_ids[p] for p in positions]
        assert rows.column("token").to_pylist() == tok.convert_ids_to_tokens([enc[i].input_ids[p] for p in positions])
        assert rows.column("char_start").to_pylist() == [enc[i].offsets[p][0] for p in positions]
        assert rows.column("char_end").to_pylist() == [enc[i].offsets[p][1] for p in positions]
        assert rows.column("word_id").to_pylist() == enc[i].word_id[positions].tolist()
        assert rows.column("special").to_pylist() == enc[i].special[positions].tolist()
        assert rows.column("is_target").to_pylist() == enc[i].is_target[positions].tolist()
    if keep == "targets":
        assert all(table.column("is_target").to_pylist())


def test_a_shard_with_no_stored_tokens_has_an_empty_table(encoded):
    tok, enc = encoded
    table = build_tokens_table(enc, [np.array([], dtype=np.int64)] * len(enc), [], tok,
                               first_example_id=10, first_row=0)
    assert table.num_rows == 0 and table.schema == TOKENS_SCHEMA
