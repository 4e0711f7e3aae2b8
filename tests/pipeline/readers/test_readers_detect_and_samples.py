"""Format auto-detection and the bundled sample data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import LayerprobeError
from pipeline.readers import detect_format, read_source
from pipeline.samples import SAMPLES_DIR


def test_auto_detects_each_format_from_path(tmp_path):
    wic = tmp_path / "wic" / "dev"
    wic.mkdir(parents=True)
    (wic / "dev.data.txt").write_text("a\tN\t0-0\ta b\ta c\n")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "x.conllu").write_text("1\ta\ta\tX\tX\t_\t0\troot\t_\t_\n\n")
    for name in ("t.jsonl", "t.json", "t.csv", "t.parquet"):
        (tmp_path / name).write_text("")
    assert detect_format(tmp_path / "wic") == "wic"
    assert detect_format(wic) == "wic"
    assert detect_format(wic / "dev.data.txt") == "wic"
    assert detect_format(tmp_path / "tb") == "conllu"
    assert detect_format(tmp_path / "tb" / "x.conllu") == "conllu"
    for name in ("t.jsonl", "t.json", "t.csv", "t.parquet"):
        assert detect_format(tmp_path / name) == "text"


def test_auto_refuses_unknown_files_and_directories(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(LayerprobeError, match=r"cannot tell the format of .*notes\.txt.*--format"):
        read_source(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayerprobeError, match=r"cannot tell the format of directory"):
        read_source(tmp_path / "empty")
    with pytest.raises(LayerprobeError, match="does not exist"):
        read_source(tmp_path / "missing")


def test_unknown_format_name_is_refused(tmp_path):
    with pytest.raises(LayerprobeError, match=r"unknown source format 'tsv'.*auto, text, wic, conllu"):
        read_source(tmp_path, format="tsv")


@pytest.mark.parametrize("limit", [0, -3, 1.5])
def test_non_positive_limit_is_refused(tmp_path, limit):
    with pytest.raises(LayerprobeError, match="limit must be a positive"):
        read_source(SAMPLES_DIR / "wic", limit=limit)


def test_samples_dir_is_a_path_to_the_package_folder():
    assert isinstance(SAMPLES_DIR, Path)
    assert (SAMPLES_DIR / "README.md").is_file()
    assert (SAMPLES_DIR / "wic" / "LICENSE.txt").is_file()
    assert (SAMPLES_DIR / "ud-english-ewt" / "LICENSE.txt").is_file()


def test_bundled_wic_sample_reads_300_train_and_150_dev_pairs():
    src = read_source(SAMPLES_DIR / "wic")
    assert src.format == "wic"
    splits = [e.columns["split"] for e in src.examples]
    assert splits == ["train"] * 600 + ["dev"] * 300
    assert all(isinstance(e.columns["label"], bool) for e in src.examples)
    assert all(e.target_word for e in src.examples)


def test_bundled_ud_sample_reads_300_sentences():
    src = read_source(SAMPLES_DIR / "ud-english-ewt")
    assert src.format == "conllu" and len(src.examples) == 300
    assert src.examples[0].columns["split"] == "dev"
    assert src.fingerprint == read_source(SAMPLES_DIR / "ud-english-ewt" / "en_ewt-ud-dev.conllu").fingerprint
