"""--max-length truncation, --keep targets, --layers subsets and the variants, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import LayerprobeError
from pipeline.executors.extract_job import run_extract
from pipeline.store import open_store
from schemas.job import ExtractSpec


def _targets_jsonl(path, corpus):
    rows = []
    for i, text in enumerate(corpus):
        word = text.split()[1]
        start = text.index(word)
        rows.append({"text": text, "target_start": start, "target_end": start + len(word), "idx": i})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(model, data, out, **kw):
    return run_extract(ExtractSpec(model=str(model), data=str(data), out=str(out), **kw),
                       executor="local", progress=False)


def test_long_texts_are_truncated_and_flagged_never_dropped(tiny_bert, corpus, tmp_path):
    data = _targets_jsonl(tmp_path / "d.jsonl", corpus)
    _run(tiny_bert, data, tmp_path / "s.zarr", max_length=8)
    s = open_store(tmp_path / "s.zarr")
    ex = s.examples.sort_by("example_id")
    assert len(ex) == len(corpus)
    assert all(ex.column("truncated").to_pylist())
    assert ex.column("n_tokens").to_pylist() == [8] * len(corpus)
    assert len(s.tokens) == 8 * len(corpus)
    assert s.manifest["stats"]["n_truncated"] == len(corpus)


def test_keep_targets_stores_only_the_target_subwords(tiny_bert, corpus, tmp_path):
    data = _targets_jsonl(tmp_path / "d.jsonl", corpus)
    _run(tiny_bert, data, tmp_path / "all.zarr")
    _run(tiny_bert, data, tmp_path / "t.zarr", keep="targets")
    full, targets = open_store(tmp_path / "all.zarr"), open_store(tmp_path / "t.zarr")
    assert all(targets.tokens.column("is_target").to_pylist())
    assert len(targets.tokens) == sum(full.tokens.column("is_target").to_pylist())
    # The same vectors as in the full store, row for row.
    key = lambda t: list(zip(t.column("example_id").to_pylist(), t.column("position").to_pylist()))
    where = {k: i for i, k in enumerate(key(full.tokens))}
    rows = [where[k] for k in key(targets.tokens)]
    for L in full.layers:
        np.testing.assert_array_equal(targets.layer(L), full.layer(L, rows))
    # The stored target tokens spell the target word.
    ex = targets.examples.sort_by("example_id")
    text = ex.column("text").to_pylist()[0]
    first = targets.tokens.filter(targets.tokens.column("example_id").to_numpy() == 0)
    spans = list(zip(first.column("char_start").to_pylist(), first.column("char_end").to_pylist()))
    assert text[spans[0][0] : spans[-1][1]] == text.split()[1]


def test_layer_subset_stores_only_the_requested_layers(tiny_gpt2, corpus, tmp_path):
    data = _targets_jsonl(tmp_path / "d.jsonl", corpus[:3])
    _run(tiny_gpt2, data, tmp_path / "all.zarr")
    _run(tiny_gpt2, data, tmp_path / "sub.zarr", layers="3,0")
    full, sub = open_store(tmp_path / "all.zarr"), open_store(tmp_path / "sub.zarr")
    assert sub.layers == [0, 3]
    for L in (0, 3):
        np.testing.assert_array_equal(sub.layer(L), full.layer(L))


def test_repeat_and_prompt_variants_mark_the_right_target_tokens(tiny_llama, corpus, tmp_path):
    data = _targets_jsonl(tmp_path / "d.jsonl", corpus[:3])
    _run(tiny_llama, data, tmp_path / "r.zarr", variant="repeat")
    _run(tiny_llama, data, tmp_path / "p.zarr", variant="prompt")
    r, p = open_store(tmp_path / "r.zarr"), open_store(tmp_path / "p.zarr")
    ex = r.examples.sort_by("example_id")
    for i, (text, inp) in enumerate(zip(ex.column("text").to_pylist(), ex.column("input_text").to_pylist())):
        assert inp == text + " " + text
        t = r.tokens.filter(r.tokens.column("example_id").to_numpy() == i)
        starts = np.array(t.column("char_start").to_pylist())[np.array(t.column("is_target").to_pylist())]
        assert starts.min() >= len(text)  # the target comes from the second copy
        words = np.array(t.column("word_id").to_pylist())
        assert (words[np.array(t.column("char_end").to_pylist()) <= len(text)] == -1).all()
    for i in range(3):
        t = p.tokens.filter(p.tokens.column("example_id").to_numpy() == i)
        pos = np.array(t.column("position").to_pylist())
        target = np.array(t.column("is_target").to_pylist())
        assert target.sum() == 1 and pos[target][0] == pos.max()


def test_max_length_too_small_for_the_special_tokens_is_refused_and_one_more_is_honoured(tiny_bert, corpus, tmp_path):
    # BERT adds [CLS] and [SEP]; asked to cut below them the tokenizer returned every text whole,
    # while the manifest said max_length 1.
    data = _targets_jsonl(tmp_path / "d.jsonl", corpus[:2])
    for n in (1, 2):
        with pytest.raises(LayerprobeError, match=rf"--max-length {n} leaves no room for text.* 2 special"):
            _run(tiny_bert, data, tmp_path / f"s{n}.zarr", max_length=n)
        assert not (tmp_path / f"s{n}.zarr").exists()
    # One text token more is honoured: the stored rows match the manifest's max_length.
    _run(tiny_bert, data, tmp_path / "s.zarr", max_length=3)
    s = open_store(tmp_path / "s.zarr")
    assert s.manifest["max_length"] == 3
    assert s.examples.column("n_tokens").to_pylist() == [3, 3]
    assert len(s.tokens) == 6


def test_encoding_refuses_a_cut_the_tokenizer_does_not_make(tiny_bert, corpus):
    from pipeline.extract import model_loading
    from pipeline.extract.tokenize import encode_examples
    from pipeline.readers.base import Example

    tok = model_loading.load_tokenizer(model_loading.resolve_model(str(tiny_bert)))
    ex = Example(text=corpus[0], words=tuple(corpus[0].split()), word_spans=())
    with pytest.raises(LayerprobeError, match="max_length 1 is too small"):
        encode_examples(tok, [ex], "base", 1)


def test_max_length_above_the_position_limit_is_refused(tiny_llama, corpus, tmp_path):
    data = _targets_jsonl(tmp_path / "d.jsonl", corpus[:2])
    with pytest.raises(LayerprobeError, match=r"--max-length 129 is more than .* 128 tokens"):
        _run(tiny_llama, data, tmp_path / "s.zarr", max_length=129)
    assert not (tmp_path / "s.zarr").exists()


def test_truncated_examples_and_lost_targets_are_counted_in_the_result(tiny_bert, tmp_path):
    long = " ".join(["river"] * 40) + " bank"
    rows = [{"text": long, "target_start": len(long) - 4, "target_end": len(long)},    # target cut off
            {"text": long, "target_start": 0, "target_end": 5},                        # truncated, target kept
            {"text": "The bank.", "target_start": 4, "target_end": 8}]                 # not truncated
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _run(tiny_bert, data, tmp_path / "s.zarr", max_length=16)
    assert (result.n_truncated, result.n_targets_lost, result.max_length) == (2, 1, 16)
    assert "2 examples truncated to max_length 16, 1 targets lost to the cut" in result.summary()


def test_keep_targets_with_every_target_past_the_cut_says_so(tiny_bert, tmp_path):
    long = " ".join(["river"] * 40) + " bank"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": long, "target_start": len(long) - 4, "target_end": len(long)}) + "\n")
    with pytest.raises(LayerprobeError, match="every target lies past the max_length 16 cut"):
        _run(tiny_bert, data, tmp_path / "s.zarr", max_length=16, keep="targets")
    assert not (tmp_path / "s.zarr").exists()
