"""`layerprobe extract`: every user error is one line on stderr and exit code 2; --dry-run writes nothing."""

from __future__ import annotations

import json
import shutil
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


@pytest.mark.parametrize("kind", ["directory", "file", "folder of stores"])
def test_existing_non_store_out_is_refused_even_with_overwrite(tiny_gpt2, jsonl, tmp_path, capsys, kind):
    out = tmp_path / "taken"
    if kind == "file":
        out.write_text("keep me")
        keep = out
    else:
        out.mkdir()
        keep = out / "notes.txt"
        keep.write_text("keep me")
        if kind == "folder of stores":  # runs2/ holding runs2/important.zarr
            assert main(extract(tiny_gpt2, jsonl, out / "important.zarr")) == 0
            capsys.readouterr()
    for extra in ((), ("--overwrite",)):
        assert main(extract(tiny_gpt2, jsonl, out, *extra)) == 2
        line = one_error_line(capsys)
        assert "not a layerprobe store" in line and "remove it yourself" in line
        assert keep.read_text() == "keep me"
    if kind == "folder of stores":
        assert open_store(out / "important.zarr").complete


def _wic_dir(tmp_path) -> Path:
    from pipeline.samples import SAMPLES_DIR

    data = tmp_path / "wic"
    shutil.copytree(SAMPLES_DIR / "wic", data)
    return data


@pytest.mark.parametrize("where", ["contains", "is", "is inside"])
def test_out_that_is_contains_or_is_inside_the_data_is_refused(tiny_gpt2, tmp_path, capsys, where):
    if where == "is inside":
        data = _wic_dir(tmp_path)
        out = data / "s.zarr"
    else:
        data = tmp_path / "proj1" / "good.jsonl"
        data.parent.mkdir()
        data.write_text(json.dumps({"text": "keep me"}) + "\n")
        out = data.parent if where == "contains" else data
    before = sorted((p, p.read_bytes()) for p in data.parent.rglob("*") if p.is_file())
    assert main(extract(tiny_gpt2, data, out, "--overwrite")) == 2
    assert f"{where} the source data" in one_error_line(capsys)
    assert sorted((p, p.read_bytes()) for p in data.parent.rglob("*") if p.is_file()) == before


@pytest.fixture()
def complete_store(tiny_gpt2, jsonl, tmp_path, capsys) -> Path:
    out = tmp_path / "ow.zarr"
    assert main(extract(tiny_gpt2, jsonl, out)) == 0
    capsys.readouterr()
    return out


def _no_ray_cluster(monkeypatch):
    """Ray as it behaves with no cluster at --ray-address auto (this test session may have one of
    its own running, which `auto` would find)."""
    import ray

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)


@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda"),
    (["--max-length", "100000"], "--max-length 100000"),
    (["--executor", "ray", "--ray-address", "auto"], "cannot connect to Ray at auto"),
    (["--workers", "0"], "--workers"),
])
def test_overwrite_keeps_the_store_when_a_fail_fast_check_refuses_the_run(tiny_gpt2, jsonl, complete_store,
                                                                          capsys, monkeypatch, flags, message):
    import torch

    if flags[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if "--ray-address" in flags:
        _no_ray_cluster(monkeypatch)
    files = sorted((p, p.read_bytes()) for p in complete_store.rglob("*") if p.is_file())
    assert main(extract(tiny_gpt2, jsonl, complete_store, "--overwrite", *flags)) == 2
    assert message in one_error_line(capsys)
    assert sorted((p, p.read_bytes()) for p in complete_store.rglob("*") if p.is_file()) == files
    assert open_store(complete_store).complete


def _broken_copy(model: Path, dest: Path, how: str) -> Path:
    import shutil

    shutil.copytree(model, dest)
    weights = dest / "model.safetensors"
    if how == "no weights":
        weights.unlink()
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "weights unlike config":  # vocab_size no longer matches the embedding table
        cfg = json.loads((dest / "config.json").read_text())
        cfg["vocab_size"] += 50
        (dest / "config.json").write_text(json.dumps(cfg))
    return dest


@pytest.mark.parametrize("how, message", [
    ("no weights", "has no weight files"),
    ("truncated weights", "cannot load the model at"),
    ("weights unlike config", "cannot load the model at"),
])
def test_a_model_that_cannot_load_is_one_line_and_overwrite_keeps_the_old_store(
        tiny_gpt2, jsonl, complete_store, tmp_path, capsys, how, message):
    # The model is loaded before --out is touched: --overwrite used to delete the store first.
    broken = _broken_copy(tiny_gpt2, tmp_path / "broken", how)
    files = sorted((p, p.read_bytes()) for p in complete_store.rglob("*") if p.is_file())
    assert main(extract(broken, jsonl, complete_store, "--overwrite")) == 2
    assert message in one_error_line(capsys)
    assert sorted((p, p.read_bytes()) for p in complete_store.rglob("*") if p.is_file()) == files
    assert not (tmp_path / "fresh.zarr").exists()
    assert main(extract(broken, jsonl, tmp_path / "fresh.zarr")) == 2  # and a new store is never started
    assert message in one_error_line(capsys) and not (tmp_path / "fresh.zarr").exists()


def test_a_model_folder_without_its_tokenizer_files_is_refused(tiny_bert, jsonl, tmp_path, capsys):
    # transformers builds a 5-token stub for a BERT folder without vocab.txt: every token was [UNK].
    import shutil

    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, bare / name)
    assert main(extract(bare, jsonl, tmp_path / "s.zarr")) == 2
    line = one_error_line(capsys)
    assert "tokenizer" in line and not (tmp_path / "s.zarr").exists()


def test_a_run_stopped_while_creating_its_store_is_created_again(tiny_gpt2, jsonl, tmp_path, capsys, monkeypatch):
    # Killed between the first zarr.json and the plan (the last file create_store writes): the
    # folder says it is layerprobe's, so the next run recreates it instead of refusing it forever.
    from pipeline.store import writer

    out = tmp_path / "s.zarr"
    real = writer.write_json

    def stop_at_the_plan(fs, path, obj):
        if path.endswith("plan.json"):
            raise KeyboardInterrupt
        return real(fs, path, obj)

    monkeypatch.setattr(writer, "write_json", stop_at_the_plan)
    assert main(extract(tiny_gpt2, jsonl, out)) == 130  # the CLI's answer to Ctrl-C
    assert (out / "zarr.json").exists() and not (out / "meta" / "plan.json").exists()
    monkeypatch.setattr(writer, "write_json", real)
    assert main(extract(tiny_gpt2, jsonl, out)) == 0
    assert open_store(out).complete


def test_an_empty_folder_or_empty_zarr_group_as_out_is_used_not_refused(tiny_gpt2, jsonl, tmp_path, capsys):
    empty = tmp_path / "made-by-hand.zarr"
    empty.mkdir()
    assert main(extract(tiny_gpt2, jsonl, empty)) == 0
    group = tmp_path / "group.zarr"
    group.mkdir()
    (group / "zarr.json").write_text(json.dumps({"attributes": {}, "zarr_format": 3, "node_type": "group"}))
    assert main(extract(tiny_gpt2, jsonl, group)) == 0
    assert open_store(empty).complete and open_store(group).complete


def test_chunks_too_big_to_buffer_are_refused_at_planning(tiny_gpt2, jsonl, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(["extract", "--model", str(tiny_gpt2), "--data", str(jsonl), "--out", str(out),
                 "--chunk-rows", "50000000", "--dry-run"]) == 2
    assert "--chunk-rows 50000000 makes 6,104 MiB chunks" in one_error_line(capsys) and not out.exists()


def test_unreachable_ray_is_one_line_and_creates_no_store(tiny_gpt2, jsonl, tmp_path, capsys, monkeypatch):
    _no_ray_cluster(monkeypatch)
    out = tmp_path / "s.zarr"
    assert main(extract(tiny_gpt2, jsonl, out, "--executor", "ray", "--ray-address", "auto")) == 2
    line = one_error_line(capsys)
    assert "cannot connect to Ray at auto" in line and "Could not find any running Ray instance" in line
    assert not out.exists()


def test_max_length_above_the_models_position_limit_is_refused_before_writing(tiny_gpt2, jsonl, tmp_path,
                                                                              capsys):
    out = tmp_path / "s.zarr"
    assert main(extract(tiny_gpt2, jsonl, out, "--max-length", "129")) == 2  # tiny_gpt2: n_positions 128
    line = one_error_line(capsys)
    assert "--max-length 129" in line and "128" in line
    assert not out.exists()
    assert main(extract(tiny_gpt2, jsonl, out, "--max-length", "128")) == 0


def test_a_validators_message_is_not_prefixed_with_pydantics_wording(tiny_gpt2, jsonl, tmp_path, capsys):
    rc = main(["extract", "--model", str(tiny_gpt2), "--data", str(jsonl), "--out", str(tmp_path / "s.zarr"),
               "--layers", "abc"])
    assert rc == 2
    line = one_error_line(capsys)
    assert "layers:" in line and "Value error" not in line


def test_workers_zero_is_one_line_and_exit_2(tiny_gpt2, jsonl, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(extract(tiny_gpt2, jsonl, out, "--workers", "0")) == 2
    assert "--workers must be" in one_error_line(capsys)
    assert not out.exists()


def test_an_unwritable_out_is_one_line_naming_the_path(tiny_gpt2, jsonl, capsys):
    assert main(extract(tiny_gpt2, jsonl, "/proc/x.zarr")) == 2
    line = one_error_line(capsys)
    assert "/proc/x.zarr" in line


def test_an_http_out_is_refused_before_the_data_is_read(tiny_gpt2, tmp_path, capsys):
    # http(s) takes no writes; the refusal comes before reading (here: a data file that is missing).
    assert main(extract(tiny_gpt2, tmp_path / "missing.jsonl", "http://127.0.0.1:9/s.zarr")) == 2
    assert "--out: cannot write a store to http://127.0.0.1:9/s.zarr: http(s) URLs are read-only" in one_error_line(capsys)


def test_an_unreachable_object_store_out_is_one_line(tiny_gpt2, jsonl, capsys, monkeypatch):
    # No credentials anywhere: botocore's NoCredentialsError becomes one line naming --out.
    pytest.importorskip("s3fs")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(extract(tiny_gpt2, jsonl, "s3://layerprobe-no-such-bucket/s.zarr")) == 2
    assert "cannot reach --out s3://layerprobe-no-such-bucket/s.zarr" in one_error_line(capsys)


def test_truncation_is_warned_at_planning_and_reported_in_the_summary(tiny_gpt2, tmp_path, capsys, caplog):
    long = " ".join(["word"] * 200) + " cat"
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"text": long, "target_start": len(long) - 3, "target_end": len(long)}) + "\n"
                    + json.dumps({"text": "The cat sat.", "target_start": 4, "target_end": 7}) + "\n")
    with caplog.at_level("WARNING"):
        assert main(extract(tiny_gpt2, data, tmp_path / "s.zarr", "--max-length", "32", "--keep", "targets")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("1 of 2 examples are longer than max_length 32" in w for w in warnings), warnings
    assert any("1 target spans lie past the max_length 32 cut" in w for w in warnings), warnings
    summary = capsys.readouterr().out
    assert "1 examples truncated to max_length 32, 1 targets lost to the cut" in summary
    assert main(["inspect", str(tmp_path / "s.zarr")]) == 0     # and the store says so too
    assert "1 truncated, 1 targets lost to the cut" in capsys.readouterr().out


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


def test_an_out_inside_another_store_is_refused(tiny_gpt2, jsonl, tmp_path, capsys):
    outer = tmp_path / "outer.zarr"
    outer.mkdir()
    (outer / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"layerprobe": {"format": "layerprobe-store"}}}))
    assert main(extract(tiny_gpt2, jsonl, outer / "inner.zarr")) == 2
    assert "is inside the store" in one_error_line(capsys)
    assert sorted(p.name for p in outer.iterdir()) == ["zarr.json"]
