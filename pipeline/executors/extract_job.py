"""`layerprobe extract`: read the source, plan shards, create or resume the store, run the shards
on an executor, then mark the store complete."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import LayerprobeError, StoreError
from pipeline.executors.planning import estimate_bytes, plan_shards
from pipeline.extract import model_loading
from pipeline.extract.forward import StoreTarget
from pipeline.extract.tokenize import encode_examples
from pipeline.readers import read_source
from pipeline.store import layout
from pipeline.store.fs import join, url_to_fs
from pipeline.store.reader import committed_ids
from pipeline.store.writer import consolidate_metadata, create_store, now_iso, write_manifest
from schemas.job import ExtractSpec
from schemas.manifest import (Manifest, ModelInfo, ShardPlan, SourceInfo, StoreStats, TokenizerInfo,
                              config_fingerprint)

log = logging.getLogger(__name__)


@dataclass
class ExtractResult:
    store: str
    status: str                         # "written", "resumed", "already complete", "dry run"
    n_shards: int = 0
    n_skipped: int = 0
    n_tokens: int = 0
    n_input_tokens: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    plan: ShardPlan | None = None
    estimate: dict = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.n_input_tokens / self.seconds if self.seconds else 0.0
        return (f"{self.store}: {self.status}; {self.n_shards} shards ({self.n_skipped} already done), "
                f"{self.n_tokens:,} token rows stored, {self.bytes_written / 1e6:,.1f} MB, "
                f"{self.seconds:,.1f} s, {rate:,.0f} input tokens/s")


@dataclass
class Prepared:
    """Everything the driver knows before any worker starts."""

    spec: ExtractSpec
    source: object
    manifest: Manifest
    plan: ShardPlan
    target: StoreTarget
    input_lengths: np.ndarray          # model-input tokens per example, int64
    estimate: dict


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("layerprobe", "torch", "transformers", "zarr", "pyarrow", "numpy", "ray", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def prepare(spec: ExtractSpec) -> Prepared:
    source = read_source(spec.data, spec.format, spec.text_column, spec.words_column, spec.limit)
    ref = model_loading.resolve_model(spec.model)
    config = model_loading.load_config(ref, spec.trust_remote_code)
    tokenizer = model_loading.load_tokenizer(ref, spec.trust_remote_code)
    n_layers = model_loading.num_layers(config)
    d_model = model_loading.hidden_size(config)
    layers = list(range(n_layers + 1)) if spec.layers == "all" else list(spec.layers)
    if layers[-1] > n_layers:
        raise LayerprobeError(f"--layers {layers[-1]} is out of range: {spec.model} has hidden_states "
                              f"0..{n_layers} (0 = embeddings, {n_layers} = last block)")
    max_length = spec.max_length or model_loading.default_max_length(tokenizer, config)
    if spec.padding_side != "auto":
        tokenizer.padding_side = spec.padding_side
    lengths, kept, n_truncated = _measure(tokenizer, source.examples, spec.variant, max_length, spec.keep)
    if spec.keep == "targets" and not kept.any():
        raise LayerprobeError("--keep targets, but no example has a target span (WiC data, or "
                              "target_start/target_end columns)")
    itemsize = np.dtype(spec.dtype).itemsize
    chunk_rows = spec.chunk_rows or layout.default_chunk_rows(d_model, itemsize)
    plan = plan_shards(lengths, kept, shard_tokens=spec.shard_tokens, chunk_rows=chunk_rows)

    model_hash = model_loading.model_content_hash(ref)
    tok_hash = model_loading.tokenizer_hash(tokenizer)
    settings = spec.fingerprint_fields() | {"layers": layers, "max_length": max_length,
                                             "chunk_rows": chunk_rows}
    fingerprint = config_fingerprint(model_hash, tok_hash, source.fingerprint, settings)
    model_dtype = str(model_loading.resolve_torch_dtype(spec.model_dtype, spec.device)).replace("torch.", "")
    manifest = Manifest(
        created_at=now_iso(),
        config_fingerprint=fingerprint,
        model=ModelInfo(
            name=model_loading.display_name(spec.model), architecture=(config.architectures or [type(config).__name__])[0],
            model_type=config.model_type, revision=getattr(config, "_commit_hash", None),
            content_hash=model_hash, n_layers=n_layers, d_model=d_model,
            vocab_size=int(getattr(config, "vocab_size", 0) or len(tokenizer)), dtype=model_dtype,
            gguf_file=ref.gguf_file, location=ref.location if ref.is_local else None,
        ),
        tokenizer=TokenizerInfo(name=model_loading.display_name(spec.model), cls=type(tokenizer).__name__, content_hash=tok_hash,
                                padding_side=tokenizer.padding_side,
                                model_max_length=min(int(tokenizer.model_max_length), 2**31 - 1)),
        source=SourceInfo(path=source.path, format=source.format, fingerprint=source.fingerprint,
                          n_examples=len(source.examples), columns=list(source.columns)),
        variant=spec.variant, keep=spec.keep, layers=layers, dtype=spec.dtype, chunk_rows=chunk_rows,
        codec=spec.codec, max_length=max_length, settings=settings,
        stats=StoreStats(n_examples=len(source.examples), n_tokens=int(kept.sum()), n_rows=plan.n_rows,
                         n_shards=len(plan.shards), n_truncated=n_truncated),
        versions=_versions(),
    )
    target = StoreTarget(path=spec.out, layers=layers, dtype=spec.dtype, chunk_rows=chunk_rows,
                         max_length=max_length, config_fingerprint=fingerprint)
    estimate = estimate_bytes(plan, n_layers=len(layers), d_model=d_model, itemsize=itemsize,
                              vocab_size=manifest.model.vocab_size,
                              compression_ratio=_expected_compression(spec.codec, spec.dtype))
    return Prepared(spec, source, manifest, plan, target, lengths, estimate)


def _measure(tokenizer, examples, variant: str, max_length: int, keep: str,
             block: int = 2048) -> tuple[np.ndarray, np.ndarray, int]:
    """Input and kept token counts per example, and how many are truncated: all the plan needs.

    Encoded in blocks and dropped: holding every example's encoding made the driver grow with the
    data (~700 B per token); the workers encode their own shards again."""
    lengths = np.zeros(len(examples), dtype=np.int64)
    kept = np.zeros(len(examples), dtype=np.int64)
    n_truncated = 0
    for start in range(0, len(examples), block):
        encoded = encode_examples(tokenizer, examples[start : start + block], variant, max_length,
                                  first_example_id=start)
        lengths[start : start + len(encoded)] = [len(e) for e in encoded]
        kept[start : start + len(encoded)] = [len(e.kept(keep)) for e in encoded]
        n_truncated += sum(e.truncated for e in encoded)
    return lengths, kept, n_truncated


def _expected_compression(codec: str, dtype: str) -> float:
    # Measured on MiniLM activations (benchmarks/README.md): float mantissas are close to random, so
    # lossless codecs win only part of the sign/exponent bits; bit shuffle finds more of them.
    if codec == "none":
        return 1.0
    if codec == "zstd":
        return {"float32": 1.10, "float16": 1.09}[dtype]
    # blosc-lz4 with bit shuffle: MiniLM's activations 1.26 (fp32) / 1.20 (fp16), its embedding
    # table 1.17 / 1.07; one figure in between for both.
    return {"float32": 1.18, "float16": 1.10}[dtype]


def format_plan(p: Prepared) -> str:
    e = p.estimate
    lines = [
        f"plan: {len(p.source.examples):,} examples -> {len(p.plan.shards)} shards, "
        f"{p.manifest.stats.n_tokens:,} token rows ({p.plan.n_rows:,} with chunk padding), "
        f"{int(p.input_lengths.sum()):,} input tokens, {len(p.manifest.layers)} layers x d={p.manifest.model.d_model}, "
        f"{p.spec.dtype}, chunks of {p.plan.chunk_rows} rows",
        f"estimated size: {e['per_layer'] / 1e6:,.1f} MB per layer, {e['hidden_states'] / 1e6:,.1f} MB "
        f"hidden states + {e['static_embeddings'] / 1e6:,.1f} MB static embeddings + {e['tables'] / 1e6:,.1f} MB "
        f"tables = {e['total'] / 1e6:,.1f} MB",
    ]
    for s in p.plan.shards[:20]:
        lines.append(f"  shard {s.shard_id:5d}: examples [{s.example_start}, {s.example_end}) "
                     f"rows [{s.row_start}, {s.row_start + s.n_rows_padded}) tokens {s.n_tokens}")
    if len(p.plan.shards) > 20:
        lines.append(f"  ... {len(p.plan.shards) - 20} more shards")
    return "\n".join(lines)


def _existing_manifest(path: str) -> dict | None | bool:
    """The manifest of an existing store; False if nothing exists there; None if something that is
    not a layerprobe store does."""
    fs, base = url_to_fs(path)
    if not fs.exists(base):
        return False
    try:
        with fs.open(join(base, "zarr.json"), "rb") as fh:
            meta = json.loads(fh.read())
    except (FileNotFoundError, NotADirectoryError, ValueError):  # NotADirectory: --out is a file
        return None
    m = meta.get("attributes", {}).get(layout.MANIFEST_ATTR)
    return m if isinstance(m, dict) else None


def _settings_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs)


def open_or_create(p: Prepared, overwrite: bool) -> tuple[set, bool]:
    """Returns (committed shard ids, static done). Refuses to mix configurations."""
    path = p.spec.out
    existing = _existing_manifest(path)
    if existing is not False and overwrite:
        fs, base = url_to_fs(path)
        fs.rm(base, recursive=True)
        existing = False
    if existing is None:
        raise StoreError(f"--out {path} already exists and is not a layerprobe store: choose another "
                         "path, or pass --overwrite to replace it")
    if existing is False:
        create_store(path, p.manifest, p.plan, d_model=p.manifest.model.d_model,
                     vocab_size=p.manifest.model.vocab_size)
        return set(), False
    if existing.get("config_fingerprint") != p.manifest.config_fingerprint:
        what = []
        for key, label in (("model", "model"), ("source", "source data")):
            old_hash = existing.get(key, {}).get("content_hash" if key == "model" else "fingerprint")
            new_hash = getattr(p.manifest, key).content_hash if key == "model" else p.manifest.source.fingerprint
            if old_hash != new_hash:
                what.append(f"{label} differs ({existing.get(key, {}).get('name') or existing.get(key, {}).get('path')})")
        diff = _settings_diff(existing.get("settings", {}), p.manifest.settings)
        if diff:
            what.append(diff)
        raise StoreError(
            f"--out {path} holds a store from another configuration ({'; '.join(what) or 'tokenizer differs'}); "
            "refusing to mix data: use a new --out, or --overwrite to replace it"
        )
    # Same configuration: resume. Keep the original manifest (creation time, versions).
    p.manifest = Manifest.model_validate(existing)
    fs, base = url_to_fs(path)
    done = committed_ids(fs, base, [s.shard_id for s in p.plan.shards] + ["static"])
    return done - {"static"}, "static" in done


def finalize(p: Prepared) -> int:
    fs, base = url_to_fs(p.spec.out)
    done = committed_ids(fs, base, [s.shard_id for s in p.plan.shards] + ["static"])
    missing = [s.shard_id for s in p.plan.shards if s.shard_id not in done]
    if missing or "static" not in done:
        raise StoreError(f"extraction ended with {len(missing)} shard(s) uncommitted: {missing[:10]}; "
                         "re-run the same command to finish them")
    p.manifest.complete = True
    p.manifest.completed_at = now_iso()
    write_manifest(p.spec.out, p.manifest)
    consolidate_metadata(p.spec.out)
    try:
        return int(fs.du(base))
    except Exception:  # some filesystems can't total sizes; the size is informational
        return 0


def run_extract(spec: ExtractSpec, *, executor: str = "ray", workers: int | None = None,
                ray_address: str | None = None, dry_run: bool = False, progress: bool = True) -> ExtractResult:
    """Plan, then extract the shards not yet committed. Ray workers cap their malloc arenas
    themselves; a Python process calling this with the local executor should call
    `pipeline.extract.heap.limit_malloc_arenas()` first, as the CLI does, or its RSS creeps with
    the number of shards."""
    t0 = time.perf_counter()
    p = prepare(spec)
    log.info(format_plan(p).splitlines()[0])
    if dry_run:
        print(format_plan(p))
        return ExtractResult(spec.out, "dry run", n_shards=len(p.plan.shards), plan=p.plan, estimate=p.estimate)
    done, static_done = open_or_create(p, spec.overwrite)
    todo = [s for s in p.plan.shards if s.shard_id not in done]
    if not todo and static_done and p.manifest.complete:
        return ExtractResult(spec.out, "already complete", n_shards=len(p.plan.shards),
                             n_skipped=len(done), n_tokens=p.manifest.stats.n_tokens, plan=p.plan)
    if done:
        log.info("resuming %s: %d of %d shards already committed, skipping them",
                 spec.out, len(done), len(p.plan.shards))
    work = [(s, p.source.examples.part(s.example_start, s.example_end),
             int(p.input_lengths[s.example_start : s.example_end].sum())) for s in todo]
    if executor == "local":
        from pipeline.executors.local import run_local
        run_local(spec, p.target, work, write_static=not static_done, progress=progress)
    else:
        from pipeline.executors.ray_executor import run_ray
        run_ray(spec, p.target, work, write_static=not static_done, workers=workers,
                ray_address=ray_address, progress=progress)
    size = finalize(p)
    return ExtractResult(
        spec.out, "resumed" if done else "written", n_shards=len(p.plan.shards), n_skipped=len(done),
        n_tokens=p.manifest.stats.n_tokens, n_input_tokens=sum(w[2] for w in work), bytes_written=size,
        seconds=time.perf_counter() - t0, plan=p.plan, estimate=p.estimate,
    )
