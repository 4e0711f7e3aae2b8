"""CoNLL-U treebanks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import LayerprobeError
from pipeline.readers import read_source

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
UD_DEV = SHARED_DATA / "ud-english-ewt" / "en_ewt-ud-dev.conllu"


def row(i, form, lemma, upos, xpos, head, deprel, id_=None):
    return "\t".join([id_ or str(i), form, lemma, upos, xpos, "_", str(head), deprel, "_", "_"])


SENT1 = "\n".join([
    "# sent_id = s1",
    "# text = I can't go.",
    row(1, "I", "I", "PRON", "PRP", 3, "nsubj"),
    "2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_",
    row(2, "ca", "can", "AUX", "MD", 4, "aux"),
    row(3, "n't", "not", "PART", "RB", 4, "advmod"),
    row(4, "go", "go", "VERB", "VB", 0, "root"),
    "4.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t4:conj\t_",
    row(5, ".", ".", "PUNCT", ".", 4, "punct"),
])
SENT2 = "\n".join([
    "# newpar",
    row(1, "Their", "their", "PRON", "PRP$", 2, "nmod:poss"),
    row(2, "dog", "dog", "NOUN", "NN", 0, "root"),
])


def write(path: Path, *sentences: str) -> Path:
    path.write_text("\n\n".join(sentences) + "\n\n", encoding="utf-8")
    return path


def test_conllu_sentence_skips_multiword_tokens_and_empty_nodes(tmp_path):
    src = read_source(write(tmp_path / "en_x-ud-train.conllu", SENT1, SENT2))
    assert src.format == "conllu"
    a, b = src.examples
    assert a.words == ("I", "ca", "n't", "go", ".")
    assert a.text == "I ca n't go ."
    assert [a.text[s:e] for s, e in a.word_spans] == list(a.words)
    assert a.columns == {
        "sent_id": "s1",
        "split": "train",
        "original_text": "I can't go.",
        "upos": ["PRON", "AUX", "PART", "VERB", "PUNCT"],
        "xpos": ["PRP", "MD", "RB", "VB", "."],
        "lemmas": ["I", "can", "not", "go", "."],
        "heads": [4 - 1, 4, 4, 0, 4],
        "deprels": ["nsubj", "aux", "advmod", "root", "punct"],
    }
    assert b.columns["deprels"] == ["nmod:poss", "root"]  # subtypes kept
    assert b.columns["sent_id"] == "en_x-ud-train.conllu:2" and b.columns["original_text"] == ""
    assert src.columns == ["sent_id", "split", "original_text", "upos", "xpos", "lemmas", "heads", "deprels"]
    assert a.target_span is None


def test_conllu_split_comes_from_file_name(tmp_path):
    d = tmp_path / "tb"
    d.mkdir()
    write(d / "b-ud-test.conllu", SENT2)
    write(d / "a-ud-dev.conllu", SENT1)
    write(d / "c_extra.conllu", SENT2)
    src = read_source(d)
    assert [e.columns["split"] for e in src.examples] == ["dev", "test", "c_extra"]  # files by name


def test_conllu_last_sentence_without_blank_line_and_crlf(tmp_path):
    p = tmp_path / "x.conllu"
    p.write_bytes((SENT1 + "\n\n" + SENT2).replace("\n", "\r\n").encode())
    src = read_source(p)
    assert len(src.examples) == 2 and src.examples[1].words == ("Their", "dog")


def test_conllu_limit_keeps_first_sentences_across_files(tmp_path):
    d = tmp_path / "tb"
    d.mkdir()
    write(d / "a.conllu", SENT1, SENT2)
    write(d / "b.conllu", SENT1)
    assert [e.columns["split"] for e in read_source(d, limit=3).examples] == ["a", "a", "b"]
    assert len(read_source(d, limit=1).examples) == 1


@pytest.mark.parametrize(
    "bad,problem",
    [
        ("3\tgo\tgo\tVERB\tVB\t_\t1\troot\t_", "expected 10 tab-separated"),
        ("3 go go VERB VB _ 1 root _ _", "expected 10 tab-separated"),
        (row(3, "go", "go", "VERB", "VB", "x", "root"), "HEAD 'x' is not a whole number"),
        (row(3, "go", "go", "VERB", "VB", 9, "root"), "HEAD 9 points past the sentence"),
        (row(5, "go", "go", "VERB", "VB", 0, "root"), "out of sequence"),
    ],
)
def test_conllu_malformed_line_names_file_and_line(tmp_path, bad, problem):
    text = "\n".join(["# sent_id = s", row(1, "a", "a", "X", "X", 0, "root"), row(2, "b", "b", "X", "X", 1, "dep"), bad])
    p = write(tmp_path / "bad.conllu", text)
    with pytest.raises(LayerprobeError, match=rf"bad\.conllu line 4: .*{problem}"):
        read_source(p)


def test_conllu_without_sentences_is_a_layerprobe_error(tmp_path):
    p = tmp_path / "c.conllu"
    p.write_text("# only a comment\n\n")
    with pytest.raises(LayerprobeError, match="no sentences"):
        read_source(p)


def test_conllu_fingerprint_changes_when_one_byte_changes(tmp_path):
    p = write(tmp_path / "x.conllu", SENT1)
    fp = read_source(p).fingerprint
    p.write_text(p.read_text().replace("nsubj", "nsubk"))
    assert read_source(p).fingerprint != fp


def test_conllu_fingerprint_changes_with_the_reader_version(tmp_path, monkeypatch):
    # A store half-written by a reader that read '_' as a label must not be resumed by one that
    # reads it as null: the same bytes, different stored columns.
    from pipeline.readers import conllu

    p = write(tmp_path / "x.conllu", SENT1)
    fp = read_source(p).fingerprint
    monkeypatch.setattr(conllu, "READER_VERSION", conllu.READER_VERSION - 1)
    assert read_source(p).fingerprint != fp


@pytest.mark.skipif(not UD_DEV.is_file(), reason=f"real UD EWT dev file not found at {UD_DEV}")
def test_real_ud_ewt_dev_reads_2001_well_formed_trees():
    src = read_source(UD_DEV)
    assert len(src.examples) == 2001
    assert {e.columns["split"] for e in src.examples} == {"dev"}
    for e in src.examples:
        heads = e.columns["heads"]
        n = len(e.words)
        assert len(heads) == len(e.columns["deprels"]) == len(e.columns["upos"]) == n
        assert all(0 <= h <= n for h in heads) and heads.count(0) == 1
        assert e.columns["original_text"]
    first = src.examples[0]
    assert first.text == "From the AP comes this story :"
    assert first.columns["heads"] == [3, 3, 4, 0, 6, 4, 4]
    assert any(":" in d for e in src.examples for d in e.columns["deprels"])


def test_unannotated_columns_read_as_missing_not_as_a_label_called_underscore(tmp_path):
    # '_' is CoNLL-U for "no annotation": a probe must drop such words, not learn '_' as a class.
    # The token '_' itself keeps its lemma '_'.
    sent = "\n".join([row(1, "See", "_", "_", "_", 0, "root"), row(2, "_", "_", "SYM", "NFP", 1, "_")])
    ex = read_source(str(write(tmp_path / "x-dev.conllu", sent))).examples[0]
    assert ex.columns["upos"] == [None, "SYM"] and ex.columns["xpos"] == [None, "NFP"]
    assert ex.columns["lemmas"] == [None, "_"] and ex.columns["deprels"] == ["root", None]


@pytest.mark.parametrize(
    "line,problem",
    [
        ("1\tHello\thello\tINTJ\tUH\t_\t\u00b2\troot\t_\t_", "HEAD '\u00b2' is not a whole number"),  # int() raises
        ("1\tHello\thello\tINTJ\tUH\t_\t\u0661\troot\t_\t_", "HEAD '\u0661' is not a whole number"),  # int() reads 1
        ("\u00b2\tHello\thello\tINTJ\tUH\t_\t0\troot\t_\t_", "ID '\u00b2' is not a word number"),
        ("\u0661\tHello\thello\tINTJ\tUH\t_\t0\troot\t_\t_", "ID '\u0661' is not a word number"),
        ("\u0661-\u0662\tHello\t_\t_\t_\t_\t_\t_\t_\t_", "ID '\u0661-\u0662' is not a word number"),
    ],
)
def test_conllu_non_ascii_digits_in_id_or_head_are_one_error_naming_the_line(tmp_path, line, problem):
    p = write(tmp_path / "u.conllu", "\n".join(["# sent_id = s", line]))
    with pytest.raises(LayerprobeError, match=rf"u\.conllu line 2: {problem}"):
        read_source(p)
