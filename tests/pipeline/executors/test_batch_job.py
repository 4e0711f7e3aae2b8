"""`layerprobe run JOB.yaml`: models x datasets x variants -> ROOT/<model>/<dataset>/<variant>.zarr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.errors import LayerprobeError
from pipeline.executors.batch_job import run_batch_job
from pipeline.store.reader import open_store


@pytest.fixture()
def jsonl(tmp_path, corpus) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:4]))
    return path


def write_job(path: Path, **spec) -> str:
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_batch_job_writes_every_model_dataset_variant_store_and_skips_done_ones(
        ray_cluster, tiny_gpt2, tiny_bert, jsonl, tmp_path, capsys):
    root = tmp_path / "runs"
    job = write_job(tmp_path / "job.yaml", output=str(root), models=[str(tiny_gpt2), str(tiny_bert)],
                    datasets=[str(jsonl)], variants=["base", "repeat"], layers="0,2", probes=[])
    assert run_batch_job(job, executor="ray", progress=False) == []
    for model in (tiny_gpt2, tiny_bert):
        for variant in ("base", "repeat"):
            store = open_store(root / model.name / "corpus" / f"{variant}.zarr")
            assert store.complete and store.layers == [0, 2]
            assert store.manifest["variant"] == variant
            assert store.manifest["model"]["name"] == str(model)
    capsys.readouterr()

    # One broken model: the others still run (here: already complete), the failure is named.
    job = write_job(tmp_path / "job2.yaml", output=str(root), models=[str(tiny_gpt2), "/nope/missing-model"],
                    datasets=[str(jsonl)], variants=["base"], layers="0,2", probes=[])
    assert run_batch_job(job, executor="ray", progress=False) == ["missing-model/corpus/base"]
    out = capsys.readouterr().out
    assert "1 of 2 combinations succeeded" in out
    assert "already complete" in out
    assert "FAILED  missing-model/corpus/base: model path not found" in out
    assert not (root / "missing-model").exists()


def test_batch_job_with_one_broken_model_still_writes_the_others(tiny_gpt2, jsonl, tmp_path):
    root = tmp_path / "runs"
    job = write_job(tmp_path / "job.yaml", output=str(root), models=["/nope/missing-model", str(tiny_gpt2)],
                    datasets=[str(jsonl)], probes=[])
    assert run_batch_job(job, executor="local", progress=False) == ["missing-model/corpus/base"]
    assert open_store(root / tiny_gpt2.name / "corpus" / "base.zarr").complete


@pytest.mark.parametrize("spec, message", [
    ({"output": "runs", "datasets": ["d.jsonl"]}, "models: Field required"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "variants": ["reversed"]}, "variants.0"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "colour": 3}, "colour"),
])
def test_an_invalid_job_spec_is_one_line_error(spec, message, tmp_path):
    job = write_job(tmp_path / "bad.yaml", **spec)
    with pytest.raises(LayerprobeError) as info:
        run_batch_job(job, executor="local", progress=False)
    msg = str(info.value)
    assert message in msg and "\n" not in msg and str(job) in msg
    assert not (tmp_path / "runs").exists()


def test_a_missing_or_non_mapping_job_spec_is_one_line_error(tmp_path):
    with pytest.raises(LayerprobeError, match="job spec not found"):
        run_batch_job(str(tmp_path / "absent.yaml"), executor="local")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(LayerprobeError, match="must be a mapping"):
        run_batch_job(str(bad), executor="local")
