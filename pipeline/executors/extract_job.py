"""`layerprobe extract`: read the source, plan shards, create or resume the store, run the shards
on an executor, then mark the store complete."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import LayerprobeError, OutTaken, StoreError
from pipeline.executors.planning import estimate_bytes, plan_shards
from pipeline.extract import model_loading
from pipeline.extract.forward import StoreTarget
from pipeline.extract.tokenize import encode_examples
from pipeline.readers import read_source
from pipeline.store import layout
from pipeline.store.fs import is_url, join, root_manifest, store_around, url_to_fs
from pipeline.store.reader import committed_ids, read_commit_records, summarize_written_with
from pipeline.store.writer import consolidate_metadata, create_store, now_iso, write_manifest
from schemas.job import ExtractSpec
from schemas.manifest import (Manifest, ModelInfo, ShardPlan, SourceInfo, StoreStats, TokenizerInfo,
                              config_fingerprint)
from schemas.tables import SourceColumnTypes

log = logging.getLogger(__name__)


def _count(n: int, noun: str) -> str:
    """`1 shard`, `2 shards`, `1,024 examples`."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


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
    max_length: int = 0
    n_truncated: int = 0                # examples cut to max_length
    n_targets_lost: int = 0             # ... of which the target span lay past the cut

    def summary(self) -> str:
        if self.status == "already complete":  # nothing ran: no size or rate to report
            return (f"{self.store}: already complete ({_count(self.n_shards, 'shard')}, {self.n_tokens:,} token "
                    f"rows); nothing to do{self.truncation_note()}")
        rate = self.n_input_tokens / self.seconds if self.seconds else 0.0
        return (f"{self.store}: {self.status}; {_count(self.n_shards, 'shard')} ({self.n_skipped} already done), "
                f"{self.n_tokens:,} token rows stored, {self.bytes_written / 1e6:,.1f} MB, "
                f"{self.seconds:,.1f} s, {rate:,.0f} input tokens/s{self.truncation_note()}")

    def truncation_note(self) -> str:
        # Truncation changes what is stored, so it is said where the run ends, not only in a log line
        # that scrolled past.
        if not self.n_truncated:
            return ""
        lost = f", {self.n_targets_lost:,} targets lost to the cut" if self.n_targets_lost else ""
        return f"; {self.n_truncated:,} examples truncated to max_length {self.max_length}{lost}"


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
    n_truncated: int = 0
    n_targets_lost: int = 0


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
    model_loading.check_tokenizer_fits(spec.model, config, tokenizer)
    n_layers = model_loading.num_layers(config)
    d_model = model_loading.hidden_size(config)
    layers = list(range(n_layers + 1)) if spec.layers == "all" else list(spec.layers)
    if layers[-1] > n_layers:
        raise LayerprobeError(f"--layers {layers[-1]} is out of range: {spec.model} has hidden_states "
                              f"0..{n_layers} (0 = embeddings, {n_layers} = last block)")
    max_length = _check_max_length(spec, config, tokenizer)
    if spec.padding_side != "auto":
        tokenizer.padding_side = spec.padding_side
    column_types = SourceColumnTypes(source.columns)
    lengths, kept, n_truncated, n_lost = _measure(tokenizer, source.examples, spec.variant, max_length,
                                                  spec.keep, column_types)
    _warn_truncation(len(source.examples), n_truncated, n_lost, max_length, spec.keep)
    if spec.keep == "targets" and not kept.any() and n_lost:
        raise LayerprobeError(f"--keep targets, but every target lies past the max_length {max_length} cut: "
                              "nothing would be stored; raise --max-length")
    if spec.keep == "targets" and not kept.any():
        raise LayerprobeError("--keep targets, but no example has a target span (WiC data, or "
                              "target_start/target_end columns)")
    itemsize = np.dtype(spec.dtype).itemsize
    chunk_rows = spec.chunk_rows or layout.default_chunk_rows(d_model, itemsize)
    chunk_bytes = chunk_rows * d_model * itemsize
    if chunk_bytes > MAX_CHUNK_BYTES:
        # Each writer holds a chunk per stored layer, and every reader decodes whole chunks.
        raise LayerprobeError(f"--chunk-rows {chunk_rows} makes {chunk_bytes / 2**20:,.0f} MiB chunks (d_model "
                              f"{d_model} x {itemsize} bytes each); at most {MAX_CHUNK_BYTES // 2**20} MiB: use "
                              f"--chunk-rows {MAX_CHUNK_BYTES // (d_model * itemsize)} or less (default: ~4 MiB)")
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
            name=model_loading.display_name(spec.model), architecture=model_loading.model_class_name(config),
            model_type=config.model_type, revision=getattr(config, "_commit_hash", None),
            content_hash=model_hash, n_layers=n_layers, d_model=d_model,
            vocab_size=int(getattr(config, "vocab_size", 0) or len(tokenizer)), dtype=model_dtype,
            gguf_file=ref.gguf_file, location=ref.location if ref.is_local else None,
        ),
        tokenizer=TokenizerInfo(name=model_loading.display_name(spec.model), cls=type(tokenizer).__name__, content_hash=tok_hash,
                                padding_side=tokenizer.padding_side,
                                model_max_length=min(int(tokenizer.model_max_length), 2**31 - 1)),
        source=SourceInfo(path=source.path, format=source.format, fingerprint=source.fingerprint,
                          reader_version=source.reader_version,
                          n_examples=len(source.examples), columns=list(source.columns)),
        variant=spec.variant, keep=spec.keep, layers=layers, dtype=spec.dtype, chunk_rows=chunk_rows,
        codec=spec.codec, max_length=max_length, settings=settings,
        stats=StoreStats(n_examples=len(source.examples), n_tokens=int(kept.sum()), n_rows=plan.n_rows,
                         n_shards=len(plan.shards), n_truncated=n_truncated, n_targets_lost=n_lost),
        versions=_versions(),
    )
    mixed = column_types.mixed
    if mixed:
        log.warning("source column(s) %s mix value types that one Arrow column cannot hold (e.g. 1 and "
                    "'one'): stored as JSON text", ", ".join(map(repr, mixed)))
    target = StoreTarget(path=spec.out, layers=layers, dtype=spec.dtype, chunk_rows=chunk_rows,
                         max_length=max_length, config_fingerprint=fingerprint, column_types=column_types.types)
    estimate = estimate_bytes(plan, n_layers=len(layers), d_model=d_model, itemsize=itemsize,
                              vocab_size=manifest.model.vocab_size,
                              compression_ratio=_expected_compression(spec.codec, spec.dtype))
    return Prepared(spec, source, manifest, plan, target, lengths, estimate, n_truncated, n_lost)


# A writer buffers one chunk per stored layer (a 30-layer model: 30 x 256 MiB = 7.5 GiB at this
# bound); the default chunk is ~4 MiB.
MAX_CHUNK_BYTES = 256 * 2**20


def _check_max_length(spec: ExtractSpec, config, tokenizer) -> int:
    """The max_length to encode with, refused here, before anything is written, when the model
    cannot honour it."""
    limit = model_loading.position_limit(config)
    if spec.max_length is not None and limit is not None and spec.max_length > limit:
        # Past the position table the forward pass dies in torch.embedding with an IndexError.
        raise LayerprobeError(f"--max-length {spec.max_length} is more than {spec.model} can read: its "
                              f"positions stop at {limit} tokens; use --max-length {limit} or less, or "
                              "leave it unset for the model's own limit")
    max_length = spec.max_length or model_loading.default_max_length(tokenizer, config)
    # The tokenizer never cuts its own special tokens: asked for fewer tokens than it adds, it
    # returns the text whole, and the store would hold untruncated rows under a smaller max_length.
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length < n_special + 1:
        raise LayerprobeError(f"--max-length {max_length} leaves no room for text: the tokenizer of "
                              f"{spec.model} adds {n_special} special token(s) to every example; use "
                              f"--max-length {n_special + 1} or more")
    return max_length


def _warn_truncation(n_examples: int, n_truncated: int, n_lost: int, max_length: int, keep: str) -> None:
    if n_truncated:
        log.warning("%d of %d examples are longer than max_length %d tokens and are truncated: their "
                    "tokens past the cut are not stored", n_truncated, n_examples, max_length)
    if n_lost:
        log.warning("%d target spans lie past the max_length %d cut and are lost (target_found false%s)",
                    n_lost, max_length, "; those examples store no rows under --keep targets"
                    if keep == "targets" else "")


def _measure(tokenizer, examples, variant: str, max_length: int, keep: str, column_types: SourceColumnTypes,
             block: int = 2048) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Input and kept token counts per example, how many are truncated, and how many of those lose
    their target to the cut: all the plan (and the user) needs. The source columns' types are
    gathered into `column_types` on the same pass (decoding every example twice cost ~0.1 s per 12k).

    Encoded in blocks and dropped: holding every example's encoding made the driver grow with the
    data (~700 B per token); the workers encode their own shards again."""
    lengths = np.zeros(len(examples), dtype=np.int64)
    kept = np.zeros(len(examples), dtype=np.int64)
    n_truncated = n_lost = 0
    for start in range(0, len(examples), block):
        part = examples[start : start + block]
        column_types.add([ex.columns for ex in part])
        encoded = encode_examples(tokenizer, part, variant, max_length, first_example_id=start)
        lengths[start : start + len(encoded)] = [len(e) for e in encoded]
        kept[start : start + len(encoded)] = [len(e.kept(keep)) for e in encoded]
        n_truncated += sum(e.truncated for e in encoded)
        n_lost += sum(e.truncated and ex.target_span is not None and not e.target_found
                      for ex, e in zip(part, encoded))
    return lengths, kept, n_truncated, n_lost


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


def _estimate_basis(p: Prepared) -> str:
    ratio = _expected_compression(p.spec.codec, p.spec.dtype)
    if ratio == 1.0:
        return ""
    basis = f" (assuming the {ratio:.2f}x {p.spec.codec} gives MiniLM's activations; other models' differ"
    if p.manifest.model.gguf_file:  # measured: SmolLM2's Q4_1 table took 21% less than estimated
        basis += ", and a quantised GGUF's de-quantised static table compresses better"
    return basis + ")"


def format_plan(p: Prepared) -> str:
    e = p.estimate
    lines = [
        f"plan: {_count(len(p.source.examples), 'example')} -> {_count(len(p.plan.shards), 'shard')}, "
        f"{p.manifest.stats.n_tokens:,} token rows ({p.plan.n_rows:,} with chunk padding), "
        f"{int(p.input_lengths.sum()):,} input tokens, {len(p.manifest.layers)} layers x d={p.manifest.model.d_model}, "
        f"{p.spec.dtype}, chunks of {p.plan.chunk_rows} rows",
        f"estimated size: {e['per_layer'] / 1e6:,.1f} MB per layer, {e['hidden_states'] / 1e6:,.1f} MB "
        f"hidden states + {e['static_embeddings'] / 1e6:,.1f} MB static embeddings + {e['tables'] / 1e6:,.1f} MB "
        f"tables = {e['total'] / 1e6:,.1f} MB" + _estimate_basis(p),
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
    manifest = root_manifest(fs, base)
    if manifest is None and _holds_nothing(fs, base):
        return False
    return manifest


def _holds_nothing(fs, base: str) -> bool:
    """An empty folder, or one holding only an empty Zarr group's zarr.json (no attributes): a
    store may be created there, nothing would be lost (`mkdir out.zarr` first is no reason to refuse)."""
    try:
        if not fs.isdir(base):
            return False
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)} - {""}
        if not names:
            return True
        if names != {"zarr.json"}:
            return False
        with fs.open(join(base, "zarr.json"), "rb") as fh:
            meta = json.loads(fh.read())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "group" and not meta.get("attributes")


def _settings_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs)


# Settings that are also reader options, hashed into the source fingerprint (pipeline/readers): a
# change to one of them changes the fingerprint with the files untouched.
_SOURCE_SETTINGS = ("format", "text_column", "words_column", "limit")


def _model_where(m: dict) -> str:
    """Where a manifest's model was read from: its local directory (and GGUF file), else its name."""
    location = m.get("location")
    if location and m.get("gguf_file"):
        return os.path.join(location, m["gguf_file"])
    return location or m.get("name") or "?"


def _same_place(a: str | None, b: str | None) -> bool:
    """Whether two recorded paths name the same place: `data/wic`, `data/wic/` and `./data/wic`
    do (resolved from here, where the run that wrote the store most likely ran too)."""
    if a is None or b is None or is_url(a) or is_url(b):
        return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _config_difference(existing: dict, new: Manifest) -> str:
    """What differs between an existing store's manifest and this run's, for the refusal: a model
    or source in another place (OLD -> NEW), the same one whose content changed, and the settings
    that differ."""
    what = []
    old_model = existing.get("model", {})
    if old_model.get("content_hash") != new.model.content_hash:
        new_model = new.model.model_dump()
        old_where, new_where = _model_where(old_model), _model_where(new_model)
        if _same_place(old_where, new_where):
            what.append(f"model at {new_where} changed since the store was written")
        elif old_model.get("name") != new_model.get("name"):
            what.append(f"model: {old_model.get('name')} -> {new_model.get('name')}")
        else:
            what.append(f"model: {old_where} -> {new_where}")
    old_settings = existing.get("settings", {})
    old_source = existing.get("source", {})
    if old_source.get("fingerprint") != new.source.fingerprint:
        old_reader = old_source.get("reader_version", 1)  # manifests before the field: version 1
        if not _same_place(old_source.get("path"), new.source.path):
            what.append(f"source data: {old_source.get('path')} -> {new.source.path}")
        elif old_reader != new.source.reader_version:
            # The same bytes read differently (e.g. CoNLL-U '_' as null): resuming would mix the two.
            what.append(f"the {new.source.format} reader changed since the store was written "
                        f"(reader version {old_reader} -> {new.source.reader_version})")
        elif all(old_settings.get(k) == new.settings.get(k) for k in _SOURCE_SETTINGS):
            # The same path read the same way: only the files' bytes are left to differ.
            what.append(f"source data at {new.source.path} changed since the store was written")
        # else the settings diff below (limit: 20 -> 30, ...) says why the fingerprint moved
    diff = _settings_diff(old_settings, new.settings)
    if diff:
        what.append(diff)
    return "; ".join(what) or "tokenizer differs"


def check_out_is_not_data(out: str, data: str) -> None:
    """Refuse an --out that is, holds or lies inside the source data: --overwrite would delete the
    data, and a store written into a data directory mixes its files into the source."""
    from pipeline.sharing.common import overlap  # the same rule copy and export use

    where = overlap(data, out)
    if where is None:
        return
    raise LayerprobeError(f"--out {out} {where} the source data --data {data}; refusing to write a store "
                          "there (it could destroy or mix with the data): choose an --out outside it")


def check_out_not_in_a_store(out: str) -> None:
    """Refuse an --out inside another store: replacing that store would delete this one silently."""
    outer = store_around(out)
    if outer:
        raise LayerprobeError(f"--out {out} is inside the store {outer}; choose an --out outside it")


def check_out_reachable(out: str) -> None:
    """An --out URL that cannot take writes (http) or cannot be reached (credentials, endpoint)
    fails here in one line, before the data is read and planned."""
    from pipeline.sharing.common import check_writable, store_errors

    check_writable(out, "--out: cannot write a store to")
    if is_url(out):
        with store_errors(out, "reach --out"):
            fs, base = url_to_fs(out)
            fs.exists(base)


def check_out(p: Prepared, overwrite: bool) -> dict | None:
    """Read-only: what is at --out, and whether this run may write there. Returns the existing
    store's manifest to resume, or None to create a new store (replacing an existing one under
    --overwrite). Nothing is deleted here, so every check can run before anything is."""
    from pipeline.sharing.common import store_errors

    path = p.spec.out
    with store_errors(path, "read --out"):
        existing = _existing_manifest(path)
    if existing is None:
        # --overwrite replaces a store, never anything else: a folder of stores, the data, notes.
        raise OutTaken(f"--out {path} already exists and is not a layerprobe store; --overwrite only "
                       "replaces a layerprobe store: choose another path, or remove it yourself",
                       kind="not_a_store")
    if existing is False or overwrite:
        return None
    fs, base = url_to_fs(path)
    if not fs.exists(join(base, layout.PLAN)):  # create_store writes the plan last
        log.info("--out %s: an earlier run was stopped while creating this store (it has no %s yet); "
                 "creating it again", path, layout.PLAN)
        return None
    if existing.get("config_fingerprint") != p.manifest.config_fingerprint:
        detail = _config_difference(existing, p.manifest)
        raise OutTaken(f"--out {path} holds a store from another configuration ({detail}); refusing to mix "
                       "data: use a new --out, or --overwrite to replace it", kind="other_config", detail=detail)
    return existing


def committed_in(p: Prepared, existing: dict | None) -> tuple[set, bool]:
    """Read-only: (committed shard ids, static table committed) of the store check_out returned to
    resume; nothing for a store about to be created or replaced."""
    if existing is None:
        return set(), False
    fs, base = url_to_fs(p.spec.out)
    present = sorted(committed_ids(fs, base, [s.shard_id for s in p.plan.shards] + ["static"]), key=str)
    # A record that is there but unreadable (a damaged copy, a hand edit) commits nothing: its shard
    # is redone, which rewrites it, instead of the store being called complete.
    records = read_commit_records(fs, base, present, strict=False)
    ok = {i: rec is not None and rec.config_fingerprint == p.manifest.config_fingerprint
          for i, rec in zip(present, records)}
    bad = [i for i, good in ok.items() if not good]
    if bad:
        log.warning("--out %s: the commit record(s) of %s are unreadable or from another configuration: "
                    "redoing %s", p.spec.out, ", ".join(f"shard {i}" for i in bad), "them" if len(bad) > 1 else "it")
    done = {i for i, good in ok.items() if good}
    return done - {"static"}, "static" in done


def create_or_resume(p: Prepared, existing: dict | None) -> None:
    """The step that writes --out: create the store (replacing a layerprobe store under
    --overwrite: check_out refused anything else), or resume `existing` with its own manifest
    (creation time, versions). Everything that can refuse the run has run before this."""
    if existing is not None:
        p.manifest = Manifest.model_validate(existing)
        return
    path = p.spec.out
    from pipeline.sharing.common import store_errors

    with store_errors(path, "write to"):  # e.g. a bucket this run may read but not write
        fs, base = url_to_fs(path)
        if fs.exists(base):
            fs.rm(base, recursive=True)
        create_store(path, p.manifest, p.plan, d_model=p.manifest.model.d_model,
                     vocab_size=p.manifest.model.vocab_size)


def open_or_create(p: Prepared, overwrite: bool) -> tuple[set, bool]:
    """check_out, committed_in and create_or_resume in one step, for callers that hold their own
    worker (benchmarks, tests): returns (committed shard ids, static done)."""
    existing = check_out(p, overwrite)
    done = committed_in(p, existing)
    create_or_resume(p, existing)
    return done


def finalize(p: Prepared) -> int:
    fs, base = url_to_fs(p.spec.out)
    done = committed_ids(fs, base, [s.shard_id for s in p.plan.shards] + ["static"])
    missing = [s.shard_id for s in p.plan.shards if s.shard_id not in done]
    if missing or "static" not in done:
        raise StoreError(f"extraction ended with {len(missing)} shard(s) uncommitted: {missing[:10]}; "
                         "re-run the same command to finish them")
    p.manifest.written_with = summarize_written_with(
        read_commit_records(fs, base, [s.shard_id for s in p.plan.shards]))
    mixed = {k: v for k, v in p.manifest.written_with.items() if len(v) > 1}
    if mixed:  # a resume changed one (e.g. a smaller --batch-tokens after running out of memory), or workers differ
        log.warning("%s: shards were written with different %s: their values agree to float rounding, not "
                    "bit for bit; the manifest's written_with records it", p.spec.out,
                    "; ".join(f"{k} " + ", ".join(f"{v} ({_count(n, 'shard')})" for v, n in c.items())
                              for k, c in mixed.items()))
    p.manifest.complete = True
    p.manifest.completed_at = now_iso()
    write_manifest(p.spec.out, p.manifest)
    consolidate_metadata(p.spec.out)
    try:
        return int(fs.du(base))
    except Exception:  # some filesystems can't total sizes; the size is informational
        return 0


def _for_workers(spec: ExtractSpec, target):
    """The spec and target with local paths made absolute. Ray workers run in the cluster's working
    directory, not the caller's: a relative --out (or --model) would name another place there."""
    import dataclasses

    def absolute(path: str) -> str:
        return path if is_url(path) else str(Path(path).expanduser().resolve())

    model = spec.model
    if model != model_loading.DEFAULT_MODEL and Path(model).expanduser().exists():  # not a hub name
        model = absolute(model)
    return (spec.model_copy(update={"out": absolute(spec.out), "model": model}),
            dataclasses.replace(target, path=absolute(target.path)))


def run_extract(spec: ExtractSpec, *, executor: str = "ray", workers: int | None = None,
                ray_address: str | None = None, dry_run: bool = False, progress: bool = True) -> ExtractResult:
    """Plan, then extract the shards not yet committed. Ray workers cap their malloc arenas
    themselves; a Python process calling this with the local executor should call
    `pipeline.extract.heap.limit_malloc_arenas()` first, as the CLI does, or its RSS creeps with
    the number of shards.

    Every check that can fail (settings, data, model limits, --out, device, Ray) runs before the
    store is touched: a refused run leaves --out as it was."""
    t0 = time.perf_counter()
    if executor not in ("ray", "local"):
        raise LayerprobeError(f"unknown executor {executor!r}: expected ray or local")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise LayerprobeError(f"--workers must be a whole number of at least 1, got {workers!r}")
    if executor == "local" and ray_address:
        log.warning("--ray-address %s is ignored: --executor local runs in this process", ray_address)
    check_out_is_not_data(spec.out, spec.data)
    check_out_not_in_a_store(spec.out)
    check_out_reachable(spec.out)
    p = prepare(spec)
    log.info(format_plan(p).splitlines()[0])
    trunc = dict(max_length=p.target.max_length, n_truncated=p.n_truncated, n_targets_lost=p.n_targets_lost)
    if dry_run:
        print(format_plan(p))
        return ExtractResult(spec.out, "dry run", n_shards=len(p.plan.shards), plan=p.plan, estimate=p.estimate,
                             **trunc)
    existing = check_out(p, spec.overwrite)
    done, static_done = committed_in(p, existing)
    todo = [s for s in p.plan.shards if s.shard_id not in done]
    if not todo and static_done and existing and existing.get("complete"):
        return ExtractResult(spec.out, "already complete", n_shards=len(p.plan.shards),
                             n_skipped=len(done), n_tokens=p.manifest.stats.n_tokens, plan=p.plan, **trunc)
    work = [(s, p.source.examples.part(s.example_start, s.example_end),
             int(p.input_lengths[s.example_start : s.example_end].sum())) for s in todo]
    workers_up = None
    if work or not static_done:  # else only finalize is left (a run killed after its last commit)
        # The workers check the device and load the model before --out is created or an old store
        # replaced: a missing GPU or cluster, or weights that cannot load (missing, truncated, unlike
        # config.json), refuse the run with --out as it was.
        if executor == "local":
            from pipeline.executors.local import LocalWorker
            workers_up = LocalWorker(spec, p.target)  # ShardExtractor.setup picks the device first
        else:
            from pipeline.executors.ray_executor import connect_ray, start_ray
            connect_ray(ray_address, device=spec.device)
            wspec, wtarget = _for_workers(spec, p.target)
            workers_up = start_ray(wspec, wtarget, n_shards=len(work), workers=workers, ray_address=ray_address)
    try:
        create_or_resume(p, existing)
        if done:
            log.info("resuming %s: %d of %d shards already committed, skipping them",
                     spec.out, len(done), len(p.plan.shards))
        if workers_up is not None:
            workers_up.run(work, write_static=not static_done, progress=progress)
    finally:
        if workers_up is not None:
            workers_up.stop()
    size = finalize(p)
    return ExtractResult(
        spec.out, "resumed" if done else "written", n_shards=len(p.plan.shards), n_skipped=len(done),
        n_tokens=p.manifest.stats.n_tokens, n_input_tokens=sum(w[2] for w in work), bytes_written=size,
        seconds=time.perf_counter() - t0, plan=p.plan, estimate=p.estimate, **trunc,
    )
