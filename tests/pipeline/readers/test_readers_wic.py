"""WiC, original distribution format."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import LayerprobeError
from pipeline.readers import read_source

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "wic").is_dir(), reason=f"real WiC data not found at {SHARED_DATA / 'wic'}"
)

PAIRS = [
    "bank\tN\t1-4\tThe bank closed .\tWe sat on the bank .",
    "run\tV\t0-2\tRun fast !\tThey often run marathons .",
    "play\tV\t1-0\tWe play chess .\tPlay it again .",
]


def make_wic(root: Path, splits=("train", "dev"), gold=True, pairs=PAIRS) -> Path:
    for split in splits:
        d = root / split
        d.mkdir(parents=True)
        (d / f"{split}.data.txt").write_text("\n".join(pairs) + "\n", encoding="utf-8")
        if gold:
            (d / f"{split}.gold.txt").write_text("\n".join("TFT"[i % 3] for i in range(len(pairs))) + "\n")
    return root


def test_wic_pair_becomes_two_examples_with_target_span(tmp_path):
    src = read_source(make_wic(tmp_path / "wic", splits=("train",)))
    assert src.format == "wic"
    a, b = src.examples[:2]
    assert (a.text, b.text) == ("The bank closed .", "We sat on the bank .")
    assert a.target_word == "bank" and a.target_word_id == 1 and a.target_span == (4, 8)
    assert b.target_word == "bank" and b.target_word_id == 4 and b.target_span == (14, 18)
    assert b.words == ("We", "sat", "on", "the", "bank", ".")
    assert a.columns == {"pair_id": "train-00000", "side": 0, "label": True, "split": "train", "lemma": "bank", "pos": "N"}
    assert b.columns["side"] == 1 and b.columns["pair_id"] == "train-00000"
    assert src.examples[2].columns["label"] is False
    assert src.columns == ["pair_id", "side", "label", "split", "lemma", "pos"]


def test_wic_splits_ordered_train_dev_test_whatever_is_present(tmp_path):
    root = make_wic(tmp_path / "wic", splits=("test", "dev", "train"))
    splits = [e.columns["split"] for e in read_source(root).examples]
    assert splits == ["train"] * 6 + ["dev"] * 6 + ["test"] * 6
    only_dev = make_wic(tmp_path / "w2", splits=("dev",))
    assert {e.columns["pair_id"] for e in read_source(only_dev).examples} == {"dev-00000", "dev-00001", "dev-00002"}


def test_wic_accepts_split_directory_and_single_data_file(tmp_path):
    root = make_wic(tmp_path / "wic", splits=("dev",))
    from_dir = read_source(root / "dev")
    from_file = read_source(root / "dev" / "dev.data.txt")
    assert from_dir.format == from_file.format == "wic"
    assert [e.text for e in from_dir.examples] == [e.text for e in from_file.examples]
    assert len(from_file.examples) == 6 and from_file.examples[0].columns["split"] == "dev"


def test_wic_without_gold_file_has_no_labels_and_says_so(tmp_path, caplog):
    root = make_wic(tmp_path / "wic", splits=("test",), gold=False)
    with caplog.at_level("WARNING", logger="pipeline.readers.wic"):
        assert {e.columns["label"] for e in read_source(root).examples} == {None}
    assert "WiC split 'test': no test.gold.txt beside test.data.txt" in caplog.text


@pytest.mark.parametrize("limit,kept", [(1, 2), (2, 2), (3, 4), (5, 6), (100, 12)])
def test_wic_limit_never_splits_a_pair(tmp_path, limit, kept):
    src = read_source(make_wic(tmp_path / "wic"), limit=limit)
    assert len(src.examples) == kept
    assert [e.columns["side"] for e in src.examples] == [0, 1] * (kept // 2)


def test_wic_target_index_out_of_range_names_file_and_line(tmp_path):
    pairs = PAIRS[:2] + ["play\tV\t1-9\tWe play chess .\tPlay it again ."]
    root = make_wic(tmp_path / "wic", splits=("dev",), pairs=pairs)
    with pytest.raises(LayerprobeError, match=r"dev\.data\.txt line 3: target index 9 is out of range"):
        read_source(root)


@pytest.mark.parametrize(
    "line,problem",
    [
        ("play\tV\t1-0\tWe play chess .", "expected 5 tab-separated fields"),
        ("play\tV\t1-0\tWe play chess .\tPlay it .\textra", "expected 5 tab-separated fields"),
        ("play\tV\t1:0\tWe play chess .\tPlay it .", "index field"),
        ("play\tV\t1-0\tWe \u00a0 chess .\tPlay it .", "empty or whitespace token"),  # a no-break space
    ],
)
def test_wic_malformed_line_names_file_and_line(tmp_path, line, problem):
    root = make_wic(tmp_path / "wic", splits=("train",), pairs=[PAIRS[0], line])
    with pytest.raises(LayerprobeError, match=rf"train\.data\.txt line 2: .*{problem}"):
        read_source(root)


def test_wic_gold_line_count_mismatch_names_both_files(tmp_path):
    root = make_wic(tmp_path / "wic", splits=("dev",))
    (root / "dev" / "dev.gold.txt").write_text("T\nF\n")
    with pytest.raises(LayerprobeError, match=r"dev\.gold\.txt has 2 lines but .*dev\.data\.txt has 3"):
        read_source(root)


def test_wic_bad_gold_value_names_line(tmp_path):
    root = make_wic(tmp_path / "wic", splits=("dev",))
    (root / "dev" / "dev.gold.txt").write_text("T\nyes\nF\n")
    with pytest.raises(LayerprobeError, match=r"dev\.gold\.txt line 2: expected T or F"):
        read_source(root)


def test_wic_fingerprint_changes_when_one_byte_changes(tmp_path):
    root = make_wic(tmp_path / "wic")
    fp = read_source(root).fingerprint
    assert read_source(root).fingerprint == fp
    gold = root / "dev" / "dev.gold.txt"
    gold.write_text(gold.read_text().replace("T", "F", 1))
    fp2 = read_source(root).fingerprint
    assert fp2 != fp
    assert read_source(root, limit=2).fingerprint != fp2


def test_words_column_is_refused_for_wic(tmp_path):
    with pytest.raises(LayerprobeError, match="words column only applies to text sources"):
        read_source(make_wic(tmp_path / "wic"), words_column="toks")


@needs_shared
def test_real_wic_dev_reads_every_pair_with_matching_targets():
    src = read_source(SHARED_DATA / "wic" / "dev")
    assert len(src.examples) == 2 * 638
    assert sum(e.columns["label"] for e in src.examples) == 2 * 319
    for e in src.examples:
        s, t = e.target_span
        assert e.text[s:t] == e.words[e.target_word_id]
        assert " ".join(e.words) == e.text
    first = src.examples[0]
    assert first.text == "Room and board ." and first.target_word == "board"


@needs_shared
def test_real_wic_directory_reads_train_then_dev():
    src = read_source(SHARED_DATA / "wic")
    assert src.format == "wic"
    assert len(src.examples) == 2 * (5428 + 638)
    assert src.examples[0].columns["split"] == "train" and src.examples[-1].columns["split"] == "dev"
    assert src.examples[-1].columns["pair_id"] == "dev-00637"


@pytest.mark.parametrize("idx", ["\u00b2-1", "1-\u00b2", "\u0661-1"])  # '²' (int() raises), '١' (int() reads 1)
def test_wic_index_with_non_ascii_digits_is_the_index_field_error(tmp_path, idx):
    line = f"carry\tV\t{idx}\tYou must carry gear .\tSound carries well ."
    root = make_wic(tmp_path / "wic", splits=("train",), pairs=[line])
    with pytest.raises(LayerprobeError, match=r"train\.data\.txt line 1: the index field must look like 3-7"):
        read_source(root)
