"""Issue 3: the store depends only on the data and the config — not on the worker count, the
executor, a killed worker, a killed driver or a re-run. One shared Ray session (2 CPUs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.errors import StoreError
from pipeline.executors.extract_job import run_extract
from pipeline.sharing.validate import validate_store
from pipeline.extract import heap
from pipeline.store.reader import open_store
from schemas.job import ExtractSpec

REPO = Path(__file__).resolve().parents[3]
SETTINGS = dict(shard_tokens=40, chunk_rows=16, batch_tokens=64)


def spec(model, data, out, **kw) -> ExtractSpec:
    return ExtractSpec(model=str(model), data=str(data), out=str(out), **(SETTINGS | kw))


def assert_same_store(a_path, b_path) -> None:
    a, b = open_store(a_path), open_store(b_path)
    assert a.complete and b.complete
    assert a.tokens.equals(b.tokens)
    assert a.examples.equals(b.examples)
    assert a.layers == b.layers
    for layer in a.layers:
        assert np.array_equal(a.layer(layer), b.layer(layer)), f"layer {layer} differs"
    assert np.array_equal(a.static_embeddings(), b.static_embeddings())


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory, corpus) -> Path:
    """~19 shards at shard_tokens=40: enough for a kill to land mid-run."""
    path = tmp_path_factory.mktemp("data") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"{i}: {t}"}) + "\n" for i, t in enumerate(corpus * 8)))
    return path


@pytest.fixture(scope="module")
def reference(tiny_gpt2, big_jsonl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    result = run_extract(spec(tiny_gpt2, big_jsonl, out), executor="local", progress=False)
    assert result.status == "written" and result.n_shards >= 10
    return out


def _commits(store: Path) -> list[Path]:
    d = store / "meta" / "commits"
    return [p for p in d.glob("shard-*.json")] if d.is_dir() else []


def _wait_for_commit(store: Path, alive, timeout=120.0) -> None:
    t0 = time.monotonic()
    while not _commits(store):
        assert alive(), "extraction ended before the first commit"
        assert time.monotonic() - t0 < timeout, "no commit record appeared"
        time.sleep(0.02)


def test_one_and_two_workers_and_local_write_identical_stores(ray_cluster, tiny_gpt2, big_jsonl, reference,
                                                               tmp_path):
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.zarr"
        result = run_extract(spec(tiny_gpt2, big_jsonl, out), executor="ray", workers=workers, progress=False)
        assert result.status == "written"
        assert_same_store(out, reference)


def _shard_worker_pids() -> list[int]:
    """ShardWorker actor processes of *this* session's Ray (descendants of this process)."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ShardWorker" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            pass
    return pids


def test_killing_a_worker_mid_run_still_writes_the_identical_store(ray_cluster, tiny_gpt2, big_jsonl,
                                                                   reference, tmp_path):
    out = tmp_path / "killed.zarr"
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = run_extract(spec(tiny_gpt2, big_jsonl, out), executor="ray", workers=2,
                                            progress=False)
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    _wait_for_commit(out, thread.is_alive)
    pids = _shard_worker_pids()
    assert pids, "no ShardWorker actor process found"
    # Workers start with capped malloc arenas (pipeline/extract/heap.py): only the environment a
    # process starts with can do that.
    assert psutil.Process(pids[0]).environ().get(heap.ARENA_ENV) == heap.arena_env()[heap.ARENA_ENV]
    n_committed_at_kill = len(_commits(out))
    os.kill(pids[0], signal.SIGKILL)
    assert thread.is_alive(), "the run finished before the worker could be killed"
    thread.join(timeout=150)
    assert not thread.is_alive(), "the run did not finish after a worker was killed"
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["result"].status == "written"
    assert n_committed_at_kill < outcome["result"].n_shards  # the kill landed mid-run
    assert_same_store(out, reference)


def _extract_cmd(model, data, out) -> list[str]:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from pipeline.executors.extract_job import run_extract\n"
        "from schemas.job import ExtractSpec\n"
        f"r = run_extract(ExtractSpec(model={str(model)!r}, data={str(data)!r}, out={str(out)!r}, "
        f"**{SETTINGS!r}), executor='local', progress=False)\n"
        "print('STATUS', r.status, r.n_skipped, r.n_shards)\n"
    )
    return [sys.executable, "-c", code]


def test_killing_the_driver_then_rerunning_resumes_to_the_identical_store(tiny_gpt2, big_jsonl, reference,
                                                                           tmp_path):
    out = tmp_path / "driver.zarr"
    cmd = _extract_cmd(tiny_gpt2, big_jsonl, out)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_commit(out, lambda: proc.poll() is None)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    n_done = len(_commits(out))
    with pytest.raises(StoreError, match="incomplete"):
        open_store(out)  # the interrupted store is refused, not half-read

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    status = [line for line in rerun.stdout.splitlines() if line.startswith("STATUS")]
    _, word, skipped, total = status[-1].split()
    assert word == "resumed" and int(skipped) >= n_done > 0 and int(skipped) < int(total)
    assert f"{skipped} of {total} shards already committed" in rerun.stderr
    assert_same_store(out, reference)


@pytest.fixture()
def small_store(tiny_gpt2, corpus, tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "small.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    out = tmp_path / "small.zarr"
    assert run_extract(spec(tiny_gpt2, data, out), executor="local", progress=False).status == "written"
    return data, out


@pytest.mark.parametrize("change, message", [
    ({"layers": [0, 1]}, "layers"),
    ({"dtype": "float16"}, "dtype"),
    ({"model": "bert"}, "model: "),
])
def test_a_changed_config_is_refused_and_the_store_is_untouched(small_store, tiny_gpt2, tiny_bert, change,
                                                                message, tmp_path):
    data, out = small_store
    keep = tmp_path / "copy.zarr"
    shutil.copytree(out, keep)
    model = tiny_bert if change.pop("model", None) else tiny_gpt2
    with pytest.raises(StoreError, match="another configuration") as info:
        run_extract(spec(model, data, out, **change), executor="local", progress=False)
    msg = str(info.value)
    assert message in msg and "\n" not in msg and "--overwrite" in msg
    assert_same_store(out, keep)


def test_rerunning_a_complete_store_is_a_no_op(small_store, tiny_gpt2):
    data, out = small_store
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = run_extract(spec(tiny_gpt2, data, out), executor="local", progress=False)
    assert result.status == "already complete"
    assert result.n_skipped == result.n_shards
    assert "nothing to do" in result.summary() and " MB" not in result.summary()  # no "0.0 MB, 0 tokens/s"
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert before == after


@pytest.fixture(scope="module")
def huge_embedding_gpt2(tmp_path_factory, tiny_gpt2) -> Path:
    """tiny_gpt2 with its input-embedding table scaled past float16's range."""
    import torch
    from transformers import AutoTokenizer, GPT2Model

    model = GPT2Model.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        model.wte.weight.mul_(1e9)
    out = tmp_path_factory.mktemp("huge_wte")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_gpt2).save_pretrained(out)
    return out


def test_a_user_error_in_a_ray_worker_comes_back_with_its_own_message(ray_cluster, huge_embedding_gpt2,
                                                                      corpus, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:2]))
    with pytest.raises(StoreError) as info:
        run_extract(spec(huge_embedding_gpt2, data, tmp_path / "s.zarr", dtype="float16"), executor="ray",
                    workers=1, progress=False)
    msg = str(info.value)
    # Exactly the writer's message: no remote traceback, no "ray::ShardWorker", no ANSI colours.
    assert msg.startswith("static_embeddings (input-embedding table) has values up to "), msg
    assert msg.endswith("store this model with --dtype float32") and "\n" not in msg and "\x1b" not in msg


def test_a_model_no_ray_worker_can_load_refuses_the_run_before_the_store_is_touched(ray_cluster, tiny_gpt2,
                                                                                    small_store, tmp_path):
    # The workers load the model before --out is created or replaced: --overwrite with weights that
    # do not load keeps the old store, and the error is the worker's one line.
    from pipeline.errors import LayerprobeError

    broken = tmp_path / "truncated"
    shutil.copytree(tiny_gpt2, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    data, store = small_store
    files = sorted((p, p.read_bytes()) for p in Path(store).rglob("*") if p.is_file())
    with pytest.raises(LayerprobeError, match="cannot load the model at") as info:
        run_extract(spec(broken, data, store, overwrite=True), executor="ray", workers=2, progress=False)
    assert "\n" not in str(info.value)
    assert sorted((p, p.read_bytes()) for p in Path(store).rglob("*") if p.is_file()) == files


def test_another_worker_exception_is_one_line_naming_the_shard_and_the_exception():
    import ray.exceptions

    from pipeline.errors import LayerprobeError
    from pipeline.executors.ray_executor import MAX_ATTEMPTS, _retry_or_fail

    remote = ray.exceptions.RayTaskError(
        "run_shard", "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom",
        ValueError("boom\nsecond line"), proctitle="\x1b[36mray::ShardWorker.run_shard()\x1b[39m", pid=1,
        ip="127.0.0.1",
    )
    with pytest.raises(LayerprobeError) as info:
        _retry_or_fail(0, [MAX_ATTEMPTS], [], remote, 7)
    assert str(info.value) == f"shard 7 (tried {MAX_ATTEMPTS} times) failed in a Ray worker: ValueError: boom"


def test_relative_paths_name_the_callers_directory_on_ray_workers(ray_cluster, tiny_gpt2, corpus, tmp_path,
                                                                  monkeypatch):
    """Ray workers run in the cluster's working directory, not the caller's: the store path (and a
    local model path) they get must be absolute, or a relative --out is written, or deleted, elsewhere."""
    import shutil

    shutil.copytree(tiny_gpt2, tmp_path / "model")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:6]))
    monkeypatch.chdir(tmp_path)   # after the cluster started elsewhere (the repository root)
    result = run_extract(spec("model", "d.jsonl", "rel.zarr"), executor="ray", progress=False)
    assert result.status == "written"
    assert validate_store(str(tmp_path / "rel.zarr")).ok


def test_a_resume_with_another_batch_size_is_recorded_as_mixed(small_store, tiny_gpt2, caplog):
    """--batch-tokens moves float rounding only (~1e-6), so a resume may change it (a smaller batch
    after running out of memory); the store then says, per setting, how many shards used which."""
    from pipeline.sharing.inspect import format_inspect, inspect_store

    data, out = small_store
    n = len(open_store(out).plan.shards)
    clean = open_store(out).manifest["written_with"]
    assert clean["batch_tokens"] == {"64": n} and clean["device"] == {"cpu": n}
    line = next(ln for ln in format_inspect(inspect_store(str(out))).splitlines() if ln.startswith("written:"))
    assert {"batch_tokens 64", "padding_side right", "device cpu"} <= set(line[len("written:"):].strip().split(", "))
    redo = sorted((out / "meta" / "commits").glob("shard-*.json"))[:2]
    for record in redo:  # two shards lost, as if killed before their commit
        record.unlink()
    result = run_extract(spec(tiny_gpt2, data, out, batch_tokens=16), executor="local", progress=False)
    assert result.status == "resumed" and result.n_skipped == result.n_shards - 2
    counts = open_store(out).manifest["written_with"]["batch_tokens"]
    assert counts == {"64": result.n_shards - 2, "16": 2}
    assert "different batch_tokens" in caplog.text and "not bit for bit" in caplog.text
    text = format_inspect(inspect_store(str(out)))
    line = next(ln for ln in text.splitlines() if ln.startswith("written:"))
    assert f"64 ({result.n_shards - 2} shards)" in line and "16 (2 shards)" in line and "[MIXED" in line


def test_a_resume_with_another_worker_count_records_the_torch_threads_as_mixed(ray_cluster, small_store,
                                                                              tiny_gpt2, caplog):
    # --workers splits a node's cores; a matrix product of a few rows rounds differently on 1 and 2
    # threads, so the thread count is recorded like --batch-tokens.
    import torch

    if torch.get_num_threads() == 1:
        pytest.skip("one core: every worker count runs one thread")
    data, out = small_store
    n = len(open_store(out).plan.shards)
    assert open_store(out).manifest["written_with"]["torch_threads"] == {str(torch.get_num_threads()): n}
    (out / "meta" / "commits" / "shard-00000.json").unlink()
    run_extract(spec(tiny_gpt2, data, out), executor="ray", workers=2, progress=False)
    local = str(torch.get_num_threads())  # the Ray session has 2 CPUs: 2 workers take 1 thread each
    assert open_store(out).manifest["written_with"]["torch_threads"] == {local: n - 1, "1": 1}
    assert "different torch_threads" in caplog.text


def test_inspect_does_not_call_a_store_with_missing_commit_records_completed(small_store):
    from pipeline.sharing.inspect import format_inspect, inspect_store

    _, out = small_store
    next((out / "meta" / "commits").glob("shard-*.json")).unlink()
    text = format_inspect(inspect_store(str(out)))
    assert "INCOMPLETE" in text and "per the manifest, but commit records are missing (run validate)" in text


def test_a_resumed_store_with_shards_from_before_written_with_shows_them_as_unknown(small_store, tiny_gpt2):
    data, out = small_store
    records = sorted((out / "meta" / "commits").glob("shard-*.json"))
    for record in records[:2]:  # written by a version that did not record written_with
        rec = json.loads(record.read_text())
        del rec["written_with"]
        record.write_text(json.dumps(rec))
    records[-1].unlink()  # one shard left to do
    assert run_extract(spec(tiny_gpt2, data, out), executor="local", progress=False).status == "resumed"
    counts = open_store(out).manifest["written_with"]["batch_tokens"]
    assert counts == {"unknown": 2, "64": len(records) - 2}
    assert validate_store(str(out)).ok


def test_an_unreadable_commit_record_is_redone_by_a_rerun_not_called_complete(small_store, tiny_gpt2, caplog):
    # It used to count as committed: a complete store with one said "already complete" (validate
    # said otherwise), and a resume failed at finalize.
    data, out = small_store
    before = {L: open_store(out).layer(L) for L in open_store(out).layers}
    records = sorted((out / "meta" / "commits").glob("shard-*.json"))
    good = records[0].read_text()
    records[0].write_text('{"shard_id": 0')  # truncated
    result = run_extract(spec(tiny_gpt2, data, out), executor="local", progress=False)
    assert result.status == "resumed" and result.n_skipped == result.n_shards - 1
    assert "shard 0 are unreadable" in caplog.text
    assert json.loads(records[0].read_text())["chunk_crc32"] == json.loads(good)["chunk_crc32"]
    assert validate_store(str(out)).ok
    for L, values in before.items():
        np.testing.assert_array_equal(open_store(out).layer(L), values)


def test_inspect_shows_a_hand_edited_written_with_instead_of_crashing(small_store):
    import zarr

    from pipeline.sharing.inspect import format_inspect, inspect_store

    _, out = small_store
    manifest = open_store(out).manifest | {"written_with": {"batch_tokens": 4096}}
    zarr.open_group(str(out), mode="r+").attrs.put({"layerprobe": manifest})
    assert "batch_tokens 4096" in format_inspect(inspect_store(str(out)))


def _node(cpus, gpus=0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


@pytest.mark.parametrize("nodes, want", [
    ([_node(16, 1)], 8),                         # capped at MAX_WRITE_THREADS
    ([_node(32, 8)], 4),                         # a node's cores shared by its GPUs
    ([_node(64), _node(8, 4)], 2),               # CPU-only nodes' cores are not a GPU worker's
    ([_node(64, 2), _node(12, 4)], 3),           # the tightest GPU node decides: a worker fits on each
    ([_node(4, 8)], 1),                          # at least one
    ([_node(2, 4, alive=False), _node(16, 2)], 8),  # dead nodes are ignored
    ([_node(64)], None),                         # no GPU node up: unknown until the autoscaler adds one
])
def test_a_gpu_worker_asks_ray_for_the_cpus_its_writer_uses_and_fits_every_gpu_node(nodes, want):
    from pipeline.executors.ray_executor import gpu_worker_cpus

    assert gpu_worker_cpus(nodes) == want


class _FakeRay:
    def __init__(self, nodes):
        self._nodes = nodes

    def nodes(self):
        return self._nodes

    def cluster_resources(self):
        total: dict = {}
        for n in self._nodes:
            for k, v in n["Resources"].items():
                total[k] = total.get(k, 0) + v
        return total


@pytest.mark.parametrize("nodes, device, workers, want", [
    # GPUs up: one worker per GPU, the writer's CPUs counted
    ([_node(4), _node(32, 4)], "auto", None, (4, {"num_gpus": 1, "num_cpus": 8}, 0, 8)),
    # an autoscaled cluster with its GPU nodes at zero: cuda asks for GPUs anyway (workers wait);
    # 1 CPU each, the writer sized on its node
    ([_node(4)], "cuda", 3, (3, {"num_gpus": 1, "num_cpus": 1}, 0, None)),
    # auto with no GPU up: CPU workers splitting the CPUs, torch threads set to the share
    ([_node(4)], "auto", 2, (2, {"num_gpus": 0, "num_cpus": 2}, 2, None)),
    # cpu on a GPU cluster: takes no GPU
    ([_node(32, 4)], "cpu", 2, (2, {"num_gpus": 0, "num_cpus": 16}, 16, None)),
])
def test_worker_resources_follow_the_device_and_the_cluster(nodes, device, workers, want):
    from pipeline.executors.ray_executor import _worker_resources

    assert _worker_resources(_FakeRay(nodes), workers, device) == want


def test_cuda_without_a_gpu_up_is_refused_locally_and_waits_on_a_joined_cluster(monkeypatch, caplog):
    from pipeline.errors import LayerprobeError
    from pipeline.executors import ray_executor

    monkeypatch.setattr(ray_executor, "ensure_ray", lambda address: _FakeRay([_node(4)]))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(LayerprobeError, match="the Ray cluster has no GPU"):
        ray_executor.connect_ray(None, device="cuda")  # a local Ray: nothing would ever add a GPU
    with caplog.at_level("WARNING", logger="pipeline.executors.ray_executor"):
        ray_executor.connect_ray("ray://head:10001", device="cuda")  # a cluster may autoscale
    assert "wait for the autoscaler to add GPU nodes" in caplog.text
