"""What `layerprobe extract` says. The refusal of an --out that holds a store from another configuration says what differs: a
setting (limit: 2 -> 4), a model or source by another name (OLD -> NEW), or the same model or source
whose content changed since the store was written; never a vague "source data differs" that a
setting already explains. And one shard is "1 shard", not "1 shards"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.errors import OutTaken
from pipeline.executors.extract_job import ExtractResult, run_extract
from schemas.job import ExtractSpec

SETTINGS = dict(shard_tokens=40, chunk_rows=16, batch_tokens=64, layers=[0, 1])


def extract(model, data, out, **kw) -> ExtractResult:
    spec = ExtractSpec(model=str(model), data=str(data), out=str(out), **(SETTINGS | kw))
    return run_extract(spec, executor="local", progress=False)


def refusal(model, data, out, **kw) -> OutTaken:
    with pytest.raises(OutTaken, match="holds a store from another configuration") as info:
        extract(model, data, out, **kw)
    assert info.value.kind == "other_config" and "\n" not in str(info.value)
    assert f"({info.value.detail})" in str(info.value)
    return info.value


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture()
def data(corpus, tmp_path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", corpus)


def test_only_the_limit_changed_says_only_the_limit(tiny_gpt2, data, tmp_path):
    out = tmp_path / "s.zarr"
    assert extract(tiny_gpt2, data, out, limit=2).status == "written"
    assert refusal(tiny_gpt2, data, out, limit=4).detail == "limit: 2 -> 4"


def test_another_source_path_says_old_and_new(tiny_gpt2, data, corpus, tmp_path):
    out = tmp_path / "s.zarr"
    extract(tiny_gpt2, data, out)
    other = write_jsonl(tmp_path / "other.jsonl", corpus[::-1])
    assert refusal(tiny_gpt2, other, out).detail == f"source data: {data} -> {other}"


def test_the_same_source_path_with_new_content_says_it_changed(tiny_gpt2, data, corpus, tmp_path):
    out = tmp_path / "s.zarr"
    extract(tiny_gpt2, data, out)
    write_jsonl(data, corpus[::-1])
    assert refusal(tiny_gpt2, data, out).detail == f"source data at {data} changed since the store was written"


def test_the_same_source_with_new_content_and_a_new_limit_says_the_limit(tiny_gpt2, data, corpus, tmp_path):
    out = tmp_path / "s.zarr"
    extract(tiny_gpt2, data, out, limit=2)
    write_jsonl(data, corpus[::-1])
    # The limit is in the source fingerprint: it explains the change, and the path is the same.
    assert refusal(tiny_gpt2, data, out, limit=4).detail == "limit: 2 -> 4"


def test_another_model_says_old_and_new(tiny_gpt2, tiny_bert, data, tmp_path):
    out = tmp_path / "s.zarr"
    extract(tiny_gpt2, data, out)
    detail = refusal(tiny_bert, data, out).detail
    assert detail.startswith(f"model: {tiny_gpt2} -> {tiny_bert}"), detail
    assert "source data" not in detail


@pytest.mark.parametrize("spelling", [str, lambda path: f"{path}/"], ids=["same", "trailing-slash"])
def test_the_same_model_path_with_new_content_says_it_changed(spelling, tiny_gpt2, data, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_gpt2, model)
    out = tmp_path / "s.zarr"
    extract(model, data, out)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"layerprobe_test_note": "edited"}))
    # The same folder however it is spelled: not "model: A -> A/"
    assert refusal(spelling(model), data, out).detail == f"model at {model} changed since the store was written"


def test_one_shard_is_singular_in_the_plan_and_the_summary(tiny_gpt2, data, tmp_path, capsys):
    result = extract(tiny_gpt2, data, tmp_path / "s.zarr", limit=1, shard_tokens=100000)
    assert result.n_shards == 1
    assert ": written; 1 shard (0 already done)," in result.summary(), result.summary()
    assert "; 2 shards (" in ExtractResult("s", "written", n_shards=2).summary()
    spec = ExtractSpec(model=str(tiny_gpt2), data=str(data), out=str(tmp_path / "plan.zarr"),
                       **(SETTINGS | dict(limit=1, shard_tokens=100000)))
    capsys.readouterr()
    run_extract(spec, executor="local", dry_run=True, progress=False)
    assert capsys.readouterr().out.startswith("plan: 1 example -> 1 shard, ")


def test_the_same_source_spelled_differently_with_new_content_says_it_changed(tiny_gpt2, data, corpus, tmp_path):
    out = tmp_path / "s.zarr"
    extract(tiny_gpt2, data, out)
    write_jsonl(data, corpus[::-1])
    spelled = tmp_path / "." / data.name  # the same file: not "source data: A -> A'"
    assert refusal(tiny_gpt2, spelled, out).detail == f"source data at {spelled} changed since the store was written"


def test_a_store_from_an_older_conllu_reader_says_the_reader_changed(tiny_gpt2, tmp_path, monkeypatch):
    # Same bytes, same settings, a reader that now returns null where it returned '_': the refusal
    # names the reader, not "source data changed" (the file did not).
    from pipeline.readers import conllu

    data = tmp_path / "x.conllu"
    data.write_text("1\tHe\the\tPRON\t_\t_\t2\tnsubj\t_\t_\n2\truns\trun\tVERB\t_\t_\t0\troot\t_\t_\n\n")
    out = tmp_path / "s.zarr"
    monkeypatch.setattr(conllu, "READER_VERSION", 1)
    extract(tiny_gpt2, data, out)
    monkeypatch.setattr(conllu, "READER_VERSION", 2)
    assert refusal(tiny_gpt2, data, out).detail == (
        "the conllu reader changed since the store was written (reader version 1 -> 2)")
