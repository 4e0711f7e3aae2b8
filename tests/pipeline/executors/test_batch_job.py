"""`layerprobe run JOB.yaml`: models x datasets x variants -> ROOT/<model>/<dataset>/<variant>.zarr."""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.errors import LayerprobeError
from pipeline.executors.batch_job import load_job, run_batch_job
from pipeline.samples import SAMPLES_DIR
from pipeline.store.reader import open_store

ROOT = Path(__file__).resolve().parents[3]


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
    # Numbers the CLI's argparse (type=int) and its checks would refuse too.
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "workers": 0}, "workers: Input should be greater"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "workers": True}, "workers: Input should be a valid integer"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "limit": "10"}, "limit: Input should be a valid integer"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "batch_tokens": 0}, "batch_tokens"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "shard_tokens": -5}, "shard_tokens"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "max_length": 2.5}, "max_length"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "layers": ["a"]}, "layers"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "layers": [True]}, "layers"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "layers": [-1]}, "must be >= 0"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.jsonl"], "layers": []}, "layers is empty"),
    ({"output": "runs", "models": ["m"], "datasets": ["d.conllu"], "format": "conllu", "variants": ["prompt"]},
     "the prompt variant needs a target word"),
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


SPEC = "output: runs\nmodels: [m]\ndatasets: [d.jsonl]\n"


@pytest.mark.parametrize("encoded", [
    SPEC.encode("utf-16"),                                  # what Windows editors call "Unicode"
    codecs.BOM_UTF16_BE + SPEC.encode("utf-16-be"),
    SPEC.encode("utf-8-sig"),
    SPEC.encode("utf-32"),
], ids=["utf-16-le-bom", "utf-16-be-bom", "utf-8-bom", "utf-32-bom"])
def test_a_job_file_with_a_byte_order_mark_is_decoded(encoded, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_bytes(encoded)
    spec = load_job(str(job))
    assert spec.output == "runs" and spec.models == ["m"] and spec.datasets == ["d.jsonl"]


@pytest.mark.parametrize("encoded, message", [
    (SPEC.replace("runs", "r\u00e9sultats").encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset 9)"),
    (SPEC.encode("utf-16-le"), "contains NUL bytes (UTF-16 without a byte order mark?)"),
    (SPEC.encode("utf-16")[:-1], "is not UTF-16 text"),
])
def test_a_job_file_that_is_not_utf8_is_one_line_error(encoded, message, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_bytes(encoded)
    with pytest.raises(LayerprobeError) as info:
        run_batch_job(str(job), executor="local", progress=False)
    msg = str(info.value)
    assert message in msg and "save it as UTF-8" in msg and str(job) in msg and "\n" not in msg


def test_an_unreadable_job_path_is_one_line_error(tmp_path):
    with pytest.raises(LayerprobeError, match="cannot read job spec .*: Is a directory"):
        run_batch_job(str(tmp_path), executor="local")


@pytest.mark.parametrize("text, where", [
    ("output: runs\nmodels: [m, x\ndatasets: [d]\n",
     "line 3, column 9: expected ',' or ']', but got ':' (while parsing a flow sequence at line 2, column 9)"),
    ("output: runs\nmodels:\n\t- m\n", "line 3, column 1: found character '\\t' that cannot start any token"),
    ("output: runs\nmodels: [m\x07]\n", "line 2, column 11: unacceptable character #x0007"),
])
def test_a_yaml_syntax_error_says_line_and_column(text, where, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(text)
    with pytest.raises(LayerprobeError) as info:
        run_batch_job(str(job), executor="local", progress=False)
    msg = str(info.value)
    assert msg.startswith(f"job spec {job} is not valid YAML: {where}") and "\n" not in msg


@pytest.mark.parametrize("probe, message", [
    ({"name": "wic", "options": {"fitt": "train"}},
     "probe wic has no option 'fitt' (valid options: fit, eval, "),
    ({"name": "polar", "options": {"lambda-angle": 0.1}}, "probe polar has no option 'lambda-angle' (valid options: "),
    ({"name": "linear", "options": {"control": True}}, "probe linear needs option 'label'"),
    ({"name": "linear", "options": {"label": "upos", "out": "x"}}, "probe linear: option 'out' is set by the job"),
    ({"name": "wic", "options": {"fit": "train[:80%]", "eval": "dev,train[50%:]"}},
     "probe wic: eval selection 'train[50%:]' shares units with fit selection 'train[:80%]'"),
    ({"name": "polar", "options": {"fit": "dev", "eval": "all"}}, "probe polar: eval selection 'all' shares units"),
    # Values of the wrong type or out of range: refused now, not after every store is extracted.
    ({"name": "polar", "options": {"epochs": "ten"}}, "probe polar: option 'epochs' must be int, got 'ten'"),
    ({"name": "polar", "options": {"lr": "1e-3"}}, "got '1e-3' (YAML reads quoted numbers, and 1e-3 without a dot"),
    ({"name": "linear", "options": {"label": False}}, "got False (YAML reads yes/no/on/off/true/false as booleans"),
    ({"name": "wic", "options": {"layers": "0,3"}}, "probe wic: option 'layers' must be list[int] | None"),
    ({"name": "wic", "options": {"static": "yes"}}, "probe wic: option 'static' must be bool"),
    ({"name": "polar", "options": {"rank": 0}}, "probe polar: rank must be an integer >= 1"),
    ({"name": "polar", "options": {"relations": "ud"}}, "probe polar: relations must be 'universal' or 'full'"),
    ({"name": "wic", "options": {"standardize": "zscore"}}, "probe wic: unknown --standardize 'zscore'"),
    ({"name": "wic", "options": {"threshold_grid": 0}}, "probe wic: --threshold-grid must be a step in [1e-06, 2]"),
    ({"name": "linear", "options": {"label": "upos", "max_iter": 0}}, "probe linear: max_iter must be an integer >= 1"),
])
def test_bad_probe_options_are_refused_before_any_extraction(probe, message, tiny_gpt2, jsonl, tmp_path):
    root = tmp_path / "runs"
    job = write_job(tmp_path / "job.yaml", output=str(root), models=[str(tiny_gpt2)], datasets=[str(jsonl)],
                    probes=["wic", probe])
    with pytest.raises(LayerprobeError) as info:
        run_batch_job(job, executor="local", progress=False)
    msg = str(info.value)
    assert msg.startswith(f"job spec {job}: ") and message in msg and "\n" not in msg
    assert not root.exists()  # refused before the extraction, not after it


def test_probe_options_are_checked_against_the_probe_functions_own_keywords():
    import inspect

    from jobs.linear import run_linear
    from jobs.polar import run_polar
    from jobs.wic import run_wic
    from pipeline.executors.batch_job import probe_option_problem

    for name, fn in (("wic", run_wic), ("polar", run_polar), ("linear", run_linear)):
        # Every keyword the function takes, at its default value: all accepted, type and value.
        options = {k: p.default for k, p in inspect.signature(fn).parameters.items() if k not in ("store", "out")}
        if name == "linear":
            options["label"] = "upos"
        assert probe_option_problem(name, options) is None, name


def test_the_example_job_is_valid_with_its_probe_options(monkeypatch):
    monkeypatch.chdir(ROOT)
    job = load_job("examples/job.yaml")
    assert [p.name for p in job.probes] == ["wic", "polar"]


def test_the_example_jobs_datasets_are_found_from_any_directory(tmp_path, monkeypatch):
    from pipeline.executors.batch_job import _resolve_data

    job_file = ROOT / "examples" / "job.yaml"
    for cwd in (ROOT, tmp_path):
        monkeypatch.chdir(cwd)
        for d in load_job(str(job_file)).datasets:
            assert Path(_resolve_data(d, job_file.parent)).exists(), (cwd, d)


def test_a_missing_dataset_names_both_places_looked_in(tiny_gpt2, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs").mkdir()
    job = write_job(tmp_path / "jobs" / "job.yaml", output=str(tmp_path / "runs"), models=[str(tiny_gpt2)],
                    datasets=["data/missing.jsonl"], probes=[])
    assert run_batch_job(job, executor="local", progress=False) == [f"{tiny_gpt2.name}/missing/base"]
    out = capsys.readouterr().out
    assert (f"dataset 'data/missing.jsonl' not found: neither {tmp_path / 'data/missing.jsonl'} nor "
            f"{tmp_path / 'jobs' / 'data/missing.jsonl'} exists") in out


def test_a_bug_in_one_combination_is_reported_with_its_traceback_and_the_others_still_run(
        tiny_gpt2, tmp_path, monkeypatch, capsys, caplog):
    # A TypeError inside a probe is a bug, not a bad option: it is not reworded as one, its
    # traceback is logged, and the next combination (an overnight job's other models) still runs.
    import jobs.wic

    calls = []

    def run_wic(*, store, out, fit="train", eval=None):  # a valid option set, and a bug inside
        calls.append(store)
        if len(calls) == 1:
            return len(None)

    monkeypatch.setattr(jobs.wic, "run_wic", run_wic)
    other = tmp_path / "other-gpt2"
    shutil.copytree(tiny_gpt2, other)
    job = write_job(tmp_path / "job.yaml", output=str(tmp_path / "runs"), models=[str(tiny_gpt2), str(other)],
                    datasets=[str(SAMPLES_DIR / "wic")], layers="0,1", limit=8, probes=["wic"])
    failed = run_batch_job(job, executor="local", progress=False)
    assert failed == [f"{tiny_gpt2.name}/wic/base"] and len(calls) == 2
    out = capsys.readouterr().out
    assert "unexpected TypeError" in out and "1 of 2 combinations succeeded" in out
    assert any(r.exc_info and r.exc_info[0] is TypeError for r in caplog.records)


def test_run_refusing_an_existing_store_gives_advice_that_works_for_run(tiny_gpt2, jsonl, tmp_path, capsys):
    root = tmp_path / "runs"
    job = write_job(tmp_path / "job.yaml", output=str(root), models=[str(tiny_gpt2)], datasets=[str(jsonl)],
                    layers="0,1")
    assert run_batch_job(job, executor="local", progress=False) == []
    capsys.readouterr()
    store = root / tiny_gpt2.name / "corpus" / "base.zarr"

    job = write_job(tmp_path / "job2.yaml", output=str(root), models=[str(tiny_gpt2)], datasets=[str(jsonl)],
                    layers="0,2")
    assert run_batch_job(job, executor="local", progress=False) == [f"{tiny_gpt2.name}/corpus/base"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("FAILED"))
    assert f"{store} holds a store from another configuration" in line and "layers" in line
    assert "set the job's output to another folder, or delete that store" in line
    assert "--out" not in line and "--overwrite" not in line  # flags of extract, not of run
    assert open_store(store).layers == [0, 1]  # untouched

    other = tmp_path / "runs2" / tiny_gpt2.name / "corpus" / "base.zarr"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    job = write_job(tmp_path / "job3.yaml", output=str(tmp_path / "runs2"), models=[str(tiny_gpt2)],
                    datasets=[str(jsonl)])
    assert run_batch_job(job, executor="local", progress=False) == [f"{tiny_gpt2.name}/corpus/base"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("FAILED"))
    assert "is not a layerprobe store" in line and "set the job's output to another folder" in line
    assert "--out" not in line and "--overwrite" not in line
    assert (other / "notes.txt").read_text() == "mine"


def test_a_probes_advice_in_a_job_names_job_options_not_cli_flags():
    # The probes word their advice in CLI flags ("pass --eval"); a job sets options instead.
    from pipeline.executors.batch_job import _flags_as_options

    assert _flags_as_options("no labelled split that the fit selection 'train' leaves out; pass --eval, e.g. "
                             "--fit 'train[:80%]' --eval 'train[80%:]'", "wic") == (
        "no labelled split that the fit selection 'train' leaves out; set the wic probe's eval option, e.g. "
        "fit: 'train[:80%]' eval: 'train[80%:]'")
    assert _flags_as_options("the store has: dev; pass e.g. --eval dev", "polar") == "the store has: dev; set e.g. eval: dev"
