"""The benchmark script runs end to end and writes its JSON and table (no timing assertions:
performance claims live in benchmarks/README.md, measured by `python -m benchmarks`)."""

import json

import pytest


@pytest.mark.slow
def test_benchmark_smallest_configuration_writes_every_section(tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "results.json"
    assert main(["--quick", "--models", "default", "--examples", "24", "--out", str(out),
                 "--workdir", str(tmp_path / "work")]) == 0
    r = json.loads(out.read_text())
    assert {"machine", "throughput", "storage", "probe_reads", "scale", "estimate"} <= set(r)
    t = r["throughput"][0]
    for key in ("bare_forward", "bare_forward_invariant_attention", "layerprobe_float32", "layerprobe_float16", "naive_np_save", "naive_hf_datasets"):
        assert t[key]["tokens_per_s"] > 0
    assert t["layerprobe_ray1_end_to_end_s"] > 0
    assert r["scale"]["peak_rss_MB_1x"] > 0
    assert r["scale"]["rss_MB_10x"]["shards"] and r["scale"]["peak_rss_MB_10x"] >= max(r["scale"]["rss_MB_10x"]["shards"])
    assert {(s["dtype"], s["codec"]) for s in r["storage"]} >= {("float32", "none"), ("float16", "blosc-lz4")}
    assert out.parent.joinpath("RESULTS.md").read_text().startswith("# layerprobe benchmark")


def test_shard_trend_finds_growth_and_not_noise():
    import numpy as np

    from benchmarks.__main__ import shard_trend

    noise = np.random.default_rng(0).normal(0, 25, 20)
    flat, err = shard_trend(list(900 + noise))
    assert abs(flat) < err  # no trend: the interval holds 0
    rising, err = shard_trend(list(900 + 5 * np.arange(20) + noise))
    assert abs(rising - 5) < err and rising - err > 0  # 5 MB per shard of growth is seen
    assert shard_trend([900, 910, 905]) is None  # too few shards to say
