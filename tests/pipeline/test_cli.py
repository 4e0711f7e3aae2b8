"""`layerprobe extract`: every user error is one line on stderr and exit code 2; --dry-run writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.store.reader import open_store


@pytest.fixture()
def jsonl(tmp_path, corpus) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:4]))
    return path


def extract(model, data, out, *extra) -> list[str]:
    return ["extract", "--model", str(model), "--data", str(data), "--out", str(out), "--executor", "local",
            "--no-progress", "--shard-tokens", "40", "--chunk-rows", "16", *extra]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("layerprobe: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_missing_model_is_one_line_and_exit_2(jsonl, tmp_path, capsys):
    assert main(extract("/nope", jsonl, tmp_path / "s.zarr")) == 2
    assert "model path not found: /nope" in one_error_line(capsys)
    assert not (tmp_path / "s.zarr").exists()


def test_missing_data_file_is_one_line_and_exit_2(tiny_gpt2, tmp_path, capsys):
    assert main(extract(tiny_gpt2, tmp_path / "absent.jsonl", tmp_path / "s.zarr")) == 2
    assert "absent.jsonl" in one_error_line(capsys)
    assert not (tmp_path / "s.zarr").exists()


def test_missing_text_column_is_one_line_and_exit_2(tiny_gpt2, tmp_path, capsys):
    data = tmp_path / "other.jsonl"
    data.write_text(json.dumps({"sentence": "no text column here"}) + "\n")
    assert main(extract(tiny_gpt2, data, tmp_path / "s.zarr")) == 2
    assert "text" in one_error_line(capsys)


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_existing_non_store_out_is_refused_without_overwrite(tiny_gpt2, jsonl, tmp_path, capsys, kind):
    out = tmp_path / "taken"
    if kind == "directory":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    else:
        out.write_text("keep me")
    assert main(extract(tiny_gpt2, jsonl, out)) == 2
    line = one_error_line(capsys)
    assert "not a layerprobe store" in line and "--overwrite" in line
    assert (out / "notes.txt" if kind == "directory" else out).read_text() == "keep me"

    assert main(extract(tiny_gpt2, jsonl, out, "--overwrite")) == 0
    assert open_store(out).complete


@pytest.fixture(scope="module")
def huge_gpt2(tmp_path_factory, tiny_gpt2) -> Path:
    """tiny_gpt2 with block 1's MLP output scaled by 1e9: hidden_states[2] leaves float16's range."""
    import torch
    from transformers import AutoTokenizer, GPT2Model

    model = GPT2Model.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        model.h[1].mlp.c_proj.weight.mul_(1e9)
    out = tmp_path_factory.mktemp("huge")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_gpt2).save_pretrained(out)
    return out


def test_float16_overflow_names_the_layer_and_the_store_stays_resumable(huge_gpt2, jsonl, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(extract(huge_gpt2, jsonl, out, "--dtype", "float16")) == 2
    line = one_error_line(capsys)
    assert "layer 2 " in line and "float16" in line and "--dtype float32" in line
    # The partial store is a store: the same command resumes (and hits the same error) ...
    assert main(extract(huge_gpt2, jsonl, out, "--dtype", "float16")) == 2
    assert "layer 2 " in one_error_line(capsys)
    # ... another dtype is refused as another configuration, and --overwrite replaces it.
    assert main(extract(huge_gpt2, jsonl, out, "--dtype", "float32")) == 2
    assert "another configuration" in one_error_line(capsys)
    assert main(extract(huge_gpt2, jsonl, out, "--dtype", "float32", "--overwrite")) == 0
    assert open_store(out).complete


def test_dry_run_prints_the_plan_and_size_and_writes_nothing(tiny_gpt2, jsonl, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(extract(tiny_gpt2, jsonl, out, "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("plan: 4 examples -> ")
    assert "estimated size:" in printed and "shard     0: examples [0," in printed
    assert not out.exists()
