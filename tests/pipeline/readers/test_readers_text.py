"""Text sources (.jsonl/.json/.csv/.parquet) read through `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import LayerprobeError
from pipeline.readers import read_source


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_words_are_whitespace_pieces_with_exact_spans(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "  Hello,  world!\tbye ", "id": 7}])
    src = read_source(p)
    ex = src.examples[0]
    assert src.format == "text"
    assert ex.words == ("Hello,", "world!", "bye")
    assert [ex.text[s:e] for s, e in ex.word_spans] == list(ex.words)
    assert ex.text == "  Hello,  world!\tbye "  # text kept verbatim
    assert ex.target_span is None and ex.target_word_id is None


def test_every_column_but_the_text_is_carried_verbatim(tmp_path):
    p = write_jsonl(
        tmp_path / "a.jsonl",
        [{"id": 1, "body": "a b", "tags": ["x", "y"], "score": 0.5}, {"id": 2, "body": "c", "tags": [], "score": None}],
    )
    src = read_source(p, text_column="body")
    assert src.columns == ["id", "tags", "score"]
    assert src.examples[0].columns == {"id": 1, "tags": ["x", "y"], "score": 0.5}
    assert src.examples[1].columns == {"id": 2, "tags": [], "score": None}


def test_target_span_columns_give_target_and_containing_word(tmp_path):
    text = "the bank of the river"
    rows = [
        {"text": text, "target_start": 4, "target_end": 8},   # "bank"
        {"text": text, "target_start": 5, "target_end": 7},   # inside "bank"
        {"text": text, "target_start": 4, "target_end": 11},  # "bank of": no single word
        {"text": text, "target_start": None, "target_end": None},
    ]
    src = read_source(write_jsonl(tmp_path / "t.jsonl", rows))
    e0, e1, e2, e3 = src.examples
    assert e0.target_span == (4, 8) and e0.target_word == "bank" and e0.target_word_id == 1
    assert e1.target_word_id == 1
    assert e2.target_span == (4, 11) and e2.target_word_id is None
    assert e3.target_span is None
    assert e0.columns["target_start"] == 4  # carried verbatim too


def test_words_column_joins_words_with_single_spaces(tmp_path):
    p = write_jsonl(tmp_path / "w.jsonl", [{"toks": ["New", "York", "!"], "target_start": 4, "target_end": 8}])
    ex = read_source(p, words_column="toks").examples[0]
    assert ex.text == "New York !"
    assert ex.words == ("New", "York", "!")
    assert ex.word_spans == ((0, 3), (4, 8), (9, 10))
    assert ex.target_word_id == 1
    assert ex.columns["toks"] == ["New", "York", "!"]


def test_csv_and_parquet_and_json_array_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.csv").write_text("text,label\nfirst one,1\nsecond,0\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["first one", "second"], "label": [1, 0]}), tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text(json.dumps([{"text": "first one", "label": 1}, {"text": "second", "label": 0}]))
    for name in ("a.csv", "a.parquet", "a.json"):
        src = read_source(tmp_path / name)
        assert [e.text for e in src.examples] == ["first one", "second"], name
        assert [e.columns["label"] for e in src.examples] == [1, 0], name


def test_limit_keeps_first_rows(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": f"row {i}"} for i in range(10)])
    assert [e.text for e in read_source(p, limit=3).examples] == ["row 0", "row 1", "row 2"]
    assert len(read_source(p, limit=100).examples) == 10


def test_missing_file_is_a_layerprobe_error(tmp_path):
    with pytest.raises(LayerprobeError, match="does not exist"):
        read_source(tmp_path / "nope.jsonl")
    with pytest.raises(LayerprobeError, match="does not exist"):
        read_source(tmp_path / "nope.jsonl", format="text")


def test_corrupt_file_is_a_layerprobe_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(LayerprobeError, match="bad.jsonl"):
        read_source(bad)
    pq_bad = tmp_path / "bad.parquet"
    pq_bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(LayerprobeError, match="bad.parquet"):
        read_source(pq_bad)


def test_missing_text_column_lists_available_columns(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"sentence": "x", "id": 1}])
    with pytest.raises(LayerprobeError, match=r"no text column 'text'.*sentence, id"):
        read_source(p)
    with pytest.raises(LayerprobeError, match=r"no words column 'toks'.*sentence"):
        read_source(p, words_column="toks")


@pytest.mark.parametrize("bad", ["", "   \t ", None])
def test_empty_text_names_the_row(tmp_path, bad):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"text": "fine too"}, {"text": bad}])
    with pytest.raises(LayerprobeError, match=r"row 2.*empty"):
        read_source(p)


@pytest.mark.parametrize(
    "start,end,problem",
    [(4, 99, "outside"), (-1, 3, "outside"), (5, 5, "empty"), (6, 2, "empty"), (3, 4, "only whitespace")],
)
def test_bad_target_span_names_the_row(tmp_path, start, end, problem):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok text", "target_start": 0, "target_end": 2},
                                          {"text": "the bank", "target_start": start, "target_end": end}])
    with pytest.raises(LayerprobeError, match=rf"row 1: target span .*{problem}"):
        read_source(p)


def test_bad_words_column_is_rejected(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"toks": "not a list"}])
    with pytest.raises(LayerprobeError, match=r"row 0.*list of strings"):
        read_source(p, words_column="toks")
    p = write_jsonl(tmp_path / "b.jsonl", [{"toks": ["a", ""]}])
    with pytest.raises(LayerprobeError, match=r"row 0: word 1 .*empty"):
        read_source(p, words_column="toks")


def test_zero_rows_is_a_layerprobe_error(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(LayerprobeError, match=r"no rows"):
        read_source(tmp_path / "empty.csv")


def test_text_fingerprint_tracks_bytes_and_options(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "abc", "t": "x y"}])
    fp = read_source(p).fingerprint
    assert len(fp) == 32 and read_source(p).fingerprint == fp
    assert read_source(p, text_column="t").fingerprint != fp
    assert read_source(p, limit=1).fingerprint != fp
    write_jsonl(p, [{"text": "abd", "t": "x y"}])
    assert read_source(p).fingerprint != fp


def test_empty_jsonl_file_is_a_layerprobe_error(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(LayerprobeError, match="is empty"):
        read_source(tmp_path / "e.jsonl")


def test_a_malformed_jsonl_is_one_error_naming_the_parse_problem(tmp_path, caplog):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{bad json\n')
    with pytest.raises(LayerprobeError, match=r"cannot read .*bad.jsonl as json \(JSON parse error: .*row 1\)"):
        read_source(p)
    assert not [r for r in caplog.records if r.name.startswith("datasets")]  # said once, by us


def test_zero_row_parquet_says_it_has_no_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "zero.parquet")
    with pytest.raises(LayerprobeError, match=r"zero\.parquet has no rows; a text source needs at least one example"):
        read_source(tmp_path / "zero.parquet")


def test_parquet_whose_first_row_group_is_empty_reads_its_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(tmp_path / "g.parquet", pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.table({"text": pa.array([], pa.string())}))
        w.write_table(pa.table({"text": ["first one", "second"]}))
    assert [e.text for e in read_source(tmp_path / "g.parquet").examples] == ["first one", "second"]


def test_words_column_keeps_the_text_column_as_original_text(tmp_path):
    p = write_jsonl(tmp_path / "w.jsonl", [{"text": "the cat sat", "words": ["a", "dog", "ran"], "id": 1}])
    src = read_source(p, words_column="words")
    ex = src.examples[0]
    assert ex.text == "a dog ran"
    assert ex.columns == {"original_text": "the cat sat", "words": ["a", "dog", "ran"], "id": 1}
    assert src.columns == ["original_text", "words", "id"]
    assert src.reader_version == 2
    # Without a text column there is nothing to keep: as before.
    q = write_jsonl(tmp_path / "q.jsonl", [{"words": ["a", "dog"]}])
    assert read_source(q, words_column="words").columns == ["words"]
    assert read_source(q, words_column="words").reader_version == 1


@pytest.mark.parametrize(
    "row,joined,original",
    [
        ({"text": "the cat sat", "words": ["a", "dog", "ran"], "target_start": 4, "target_end": 7},
         "'a dog ran'", "'the cat sat'"),
        ({"text": "New York's big", "words": ["New", "York", "'s", "big"], "target_start": 11, "target_end": 14},
         "\"New York 's big\"", "\"New York's big\""),
    ],
)
def test_words_column_target_offsets_are_refused_when_the_text_column_differs(tmp_path, row, joined, original):
    p = write_jsonl(tmp_path / "w.jsonl", [{"text": "a b", "words": ["a", "b"], "target_start": 0, "target_end": 1}, row])
    with pytest.raises(LayerprobeError) as e:
        read_source(p, words_column="words")
    msg = str(e.value)
    assert "w.jsonl row 1: target_start/target_end are ambiguous" in msg
    assert f"joined by single spaces ({joined})" in msg and f"another text ({original})" in msg


def test_words_column_target_offsets_index_the_joined_words_when_the_text_matches(tmp_path):
    p = write_jsonl(tmp_path / "w.jsonl", [
        {"text": "a dog ran", "words": ["a", "dog", "ran"], "target_start": 2, "target_end": 5},
        {"text": "something else", "words": ["a", "dog", "ran"], "target_start": None, "target_end": None},
    ])
    e0, e1 = read_source(p, words_column="words").examples
    assert e0.target_word == "dog" and e0.target_word_id == 1
    assert e1.target_span is None and e1.columns["original_text"] == "something else"


def test_words_column_with_a_text_column_refuses_a_clashing_original_text_column(tmp_path):
    p = write_jsonl(tmp_path / "w.jsonl", [{"text": "x", "original_text": "y", "words": ["x"]}])
    with pytest.raises(LayerprobeError, match=r"w\.jsonl has a column 'original_text' besides the text column 'text'"):
        read_source(p, words_column="words")


def test_error_messages_shorten_long_texts(tmp_path):
    long = "word " * 100
    p = write_jsonl(tmp_path / "w.jsonl", [{"text": long, "words": ["a", "b"], "target_start": 0, "target_end": 1}])
    with pytest.raises(LayerprobeError) as e:
        read_source(p, words_column="words")
    assert long not in str(e.value) and "..." in str(e.value)
