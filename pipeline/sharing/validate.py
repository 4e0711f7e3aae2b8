"""`layerprobe validate`: re-hash every chunk and table of a store against its commit records.

Problems are collected (never the first one only) and name the shard and layer:
"shard 3, layer 4: chunk rows 512-1023 missing". A store that can't be opened at all is a
StoreError (exit 2); a store with problems exits 1.

Only `validate` and `copy` (which validates its destination) check chunk checksums: ordinary reads
(probes, export, `open_store(...).layer(L)`) do not, so a flipped byte inside a compressed chunk that
still decodes yields slightly wrong numbers without any error; run `layerprobe validate` on a store
you did not write yourself, or after moving it, before trusting its numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import StoreError
from pipeline.sharing.common import (chunk_crc32, chunk_key, decode_chunk, open_store_checked,
                                     read_array_meta, read_bytes, read_many, safe_join, store_errors,
                                     table_from_bytes)
from pipeline.store import layout
from pipeline.store.reader import summarize_written_with
from schemas.manifest import (FORMAT_NAME, FORMAT_VERSION, SETTINGS_MIRRORED, CommitRecord, Manifest,
                              config_fingerprint)


@dataclass
class Problem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class ValidationReport:
    path: str
    n_shards: int = 0
    n_committed: int = 0
    n_chunks: int = 0
    n_tables: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str) -> None:
        self.problems.append(Problem(where, what))

    def summary(self) -> str:
        head = (f"{self.path}: {self.n_committed}/{self.n_shards} shards committed, "
                f"{self.n_chunks} chunks and {self.n_tables} tables checked")
        if self.ok:
            return head + ": OK"
        return head + f": {len(self.problems)} problem(s)"


def _rows(r0: int, r1: int) -> str:
    return f"rows {r0}-{r1 - 1}"


def _check_manifest(st, rep: ValidationReport, hmeta: dict, smeta: dict | None, coord) -> None:
    m = st.manifest
    if m.get("format") != FORMAT_NAME:
        rep.add("manifest", f"format is {m.get('format')!r}, expected {FORMAT_NAME!r}")
    if m.get("format_version") != FORMAT_VERSION:
        rep.add("manifest", f"format_version is {m.get('format_version')!r}, this validator checks {FORMAT_VERSION}")
    try:
        man = Manifest.model_validate(m)
    except Exception as exc:  # pydantic ValidationError
        rep.add("manifest", f"invalid: {str(exc).splitlines()[0]}")
        return
    expected = config_fingerprint(man.model.content_hash, man.tokenizer.content_hash, man.source.fingerprint,
                                  man.settings)
    if man.config_fingerprint != expected:
        rep.add("manifest", f"config_fingerprint {man.config_fingerprint} is not the hash of its model, "
                            f"tokenizer, source and settings ({expected}): the manifest was edited")
    for key in SETTINGS_MIRRORED:
        if key in man.settings and man.settings[key] != getattr(man, key):
            rep.add("manifest", f"{key}={getattr(man, key)!r} but settings.{key}={man.settings[key]!r}")
    plan = st.plan
    stats = man.stats
    if plan.n_rows != stats.n_rows:
        rep.add("manifest", f"stats.n_rows={stats.n_rows} but the plan has n_rows={plan.n_rows}")
    if len(plan.shards) != stats.n_shards:
        rep.add("manifest", f"stats.n_shards={stats.n_shards} but the plan has {len(plan.shards)} shards")
    if sum(s.n_tokens for s in plan.shards) != stats.n_tokens:
        rep.add("manifest", f"stats.n_tokens={stats.n_tokens} but the plan's shards hold "
                            f"{sum(s.n_tokens for s in plan.shards)}")
    if plan.chunk_rows != man.chunk_rows:
        rep.add("plan", f"chunk_rows={plan.chunk_rows} but the manifest says {man.chunk_rows}")
    # The plan: chunk-aligned, contiguous, non-overlapping shards covering [0, n_rows).
    next_row, ids = 0, set()
    for s in plan.shards:
        where = f"plan, shard {s.shard_id}"
        if s.shard_id in ids:
            rep.add(where, "duplicate shard_id")
        ids.add(s.shard_id)
        if s.row_start % plan.chunk_rows or s.n_rows_padded % plan.chunk_rows:
            rep.add(where, f"rows {s.row_start}+{s.n_rows_padded} not aligned to chunk_rows={plan.chunk_rows}")
        if s.row_start != next_row:
            rep.add(where, f"row_start={s.row_start}, expected {next_row} (gap or overlap)")
        if s.n_tokens > s.n_rows_padded:
            rep.add(where, f"n_tokens={s.n_tokens} > n_rows_padded={s.n_rows_padded}")
        next_row = s.row_start + s.n_rows_padded
    if next_row != plan.n_rows:
        rep.add("plan", f"shards cover {next_row} rows, plan n_rows={plan.n_rows}")
    # The arrays agree with the manifest.
    shape = (len(man.layers), plan.n_rows, man.model.d_model)
    if tuple(hmeta["shape"]) != shape:
        rep.add(layout.HIDDEN, f"shape {tuple(hmeta['shape'])}, manifest implies {shape}")
    chunks = tuple(hmeta["chunk_grid"]["configuration"]["chunk_shape"])
    if chunks != (1, plan.chunk_rows, man.model.d_model):
        rep.add(layout.HIDDEN, f"chunks {chunks}, expected {(1, plan.chunk_rows, man.model.d_model)}")
    if np.dtype(hmeta["data_type"]) != np.dtype(man.dtype):
        rep.add(layout.HIDDEN, f"dtype {hmeta['data_type']}, manifest says {man.dtype}")
    if tuple(hmeta.get("dimension_names") or ()) != layout.DIMS_HIDDEN:
        rep.add(layout.HIDDEN, f"dimension_names {hmeta.get('dimension_names')}, expected {list(layout.DIMS_HIDDEN)}")
    if coord is not None and list(coord) != list(man.layers):
        rep.add(layout.LAYER_COORD, f"values {[int(x) for x in coord]} differ from the manifest's layers {man.layers}")
    if smeta is not None and tuple(smeta["shape"]) != (man.model.vocab_size, man.model.d_model):
        rep.add(layout.STATIC, f"shape {tuple(smeta['shape'])}, expected {(man.model.vocab_size, man.model.d_model)}")


def _check_consolidated(fs, base: str, metas: dict, rep: ValidationReport) -> None:
    """Plain zarr and xarray read arrays through the root's consolidated metadata when it is there:
    it must say what each array's own zarr.json says."""
    root = json.loads(read_bytes(fs, safe_join(base, "zarr.json")) or b"{}")
    listed = (root.get("consolidated_metadata") or {}).get("metadata")
    if listed is None:
        return
    for name, meta in metas.items():
        if meta is None:
            continue
        copy = listed.get(name)
        if copy is None:
            rep.add("consolidated metadata", f"has no entry for {name}")
            continue
        for key in ("shape", "data_type", "chunk_grid", "codecs", "dimension_names"):
            if copy.get(key) != meta.get(key):
                rep.add("consolidated metadata", f"{name}.{key} differs from {name}/zarr.json")


def _read_commit(fs, base: str, shard_id, rep: ValidationReport, where: str) -> CommitRecord | None:
    raw = read_bytes(fs, safe_join(base, layout.commit_record(shard_id)))
    if raw is None:
        rep.add(where, "commit record missing (shard not committed: extraction unfinished or interrupted)")
        return None
    try:
        return CommitRecord.model_validate(json.loads(raw))
    except Exception as exc:  # JSON or pydantic
        rep.add(where, f"commit record unreadable ({type(exc).__name__})")
        return None


def _check_chunks(fs, base, meta, array, rec, li, layer_label, row_start, n_rows, n_valid_rows,
                  rep, where_fmt) -> None:
    """Fetch and re-hash the chunks of rows [row_start, row_start+n_rows) of `array` (2-D view at
    layer position li for hidden_states)."""
    cr = meta["chunk_grid"]["configuration"]["chunk_shape"][-2]
    crcs = (rec.chunk_crc32.get(array) or {}).get(str(li))
    n_chunks = -(-n_rows // cr)
    where = where_fmt(layer_label)
    if crcs is None:
        rep.add(where, f"commit record has no checksums for {array} layer position {li}")
        return
    if len(crcs) != n_chunks:
        rep.add(where, f"commit record lists {len(crcs)} chunk checksums, expected {n_chunks}")
    c0 = row_start // cr
    coords = [((li, c0 + k, 0) if array == layout.HIDDEN else (c0 + k, 0)) for k in range(n_chunks)]
    paths = [safe_join(base, f"{array}/{chunk_key(meta, c)}") for c in coords]
    for k, (path, got) in enumerate(read_many(fs, paths)):
        r0 = row_start + k * cr
        r1 = min(r0 + cr, row_start + n_rows)
        rep.n_chunks += 1
        if isinstance(got, BaseException):
            if isinstance(got, FileNotFoundError):
                rep.add(where, f"chunk {_rows(r0, r1)} missing")
            else:
                rep.add(where, f"chunk {_rows(r0, r1)} unreadable ({type(got).__name__}: {got})")
            continue
        try:
            decoded = decode_chunk(got, meta)
        except StoreError:
            raise
        except Exception as exc:  # corrupt compressed data: a finding, not a crash
            rep.add(where, f"chunk {_rows(r0, r1)} corrupt (cannot decode: {type(exc).__name__}: {exc})")
            continue
        valid = min(cr, max(0, n_valid_rows - (r0 - row_start)))
        if k < len(crcs) and chunk_crc32(decoded, valid if valid < cr else None) != crcs[k]:
            rep.add(where, f"chunk {_rows(r0, r1)} checksum mismatch")


def validate_store(path: str, storage_options: dict | None = None, *, check_static: bool = True) -> ValidationReport:
    st = open_store_checked(path, storage_options, allow_incomplete=True)
    fs, base = st.fs, st.base
    rep = ValidationReport(path=path, n_shards=len(st.plan.shards))
    with store_errors(path, "validate"):
        hmeta = read_array_meta(fs, base, layout.HIDDEN)
        try:
            smeta = read_array_meta(fs, base, layout.STATIC)
        except StoreError as exc:
            smeta = None
            rep.add(layout.STATIC, str(exc))
        try:
            coord = np.asarray(st.root[layout.LAYER_COORD][:])
        except Exception as exc:  # noqa: BLE001
            coord = None
            rep.add(layout.LAYER_COORD, f"unreadable ({type(exc).__name__})")
        _check_manifest(st, rep, hmeta, smeta, coord)
        _check_consolidated(fs, base, {layout.HIDDEN: hmeta, layout.STATIC: smeta}, rep)
        fingerprint = st.manifest.get("config_fingerprint")
        layers = list(st.manifest.get("layers", []))
        n_layers = hmeta["shape"][0]
        missing_commits = 0
        records = []

        for s in st.plan.shards:
            where = f"shard {s.shard_id}"
            rec = _read_commit(fs, base, s.shard_id, rep, where)
            if rec is None:
                missing_commits += 1
                continue
            rep.n_committed += 1
            records.append(rec)
            if rec.shard_id != s.shard_id:
                rep.add(where, f"commit record is for shard {rec.shard_id}")
            if rec.config_fingerprint != fingerprint:
                rep.add(where, f"config_fingerprint {rec.config_fingerprint} differs from the manifest's "
                               f"{fingerprint} (written by another configuration)")
            for name in ("row_start", "n_rows_padded", "n_tokens"):
                if getattr(rec, name) != getattr(s, name):
                    rep.add(where, f"commit record {name}={getattr(rec, name)}, plan says {getattr(s, name)}")
            if rec.n_examples != s.example_end - s.example_start:
                rep.add(where, f"commit record n_examples={rec.n_examples}, plan says {s.example_end - s.example_start}")
            # Tables: only the two the layout names; any other path in the record is refused.
            expected = {layout.tokens_table(s.shard_id): "tokens", layout.examples_table(s.shard_id): "examples"}
            for rel in rec.table_sha256:
                safe_join(base, rel)  # StoreError if it escapes the store
                if rel not in expected:
                    rep.add(where, f"commit record lists an unexpected table {rel!r}")
            for rel, kind in expected.items():
                rep.n_tables += 1
                want = rec.table_sha256.get(rel)
                data = read_bytes(fs, safe_join(base, rel))
                if data is None:
                    rep.add(where, f"{kind} table {rel} missing")
                    continue
                if want is None:
                    rep.add(where, f"commit record has no sha256 for {rel}")
                elif hashlib.sha256(data).hexdigest() != want:
                    rep.add(where, f"{kind} table {rel} checksum mismatch")
                    continue
                try:
                    t = table_from_bytes(data)
                except Exception as exc:  # noqa: BLE001
                    rep.add(where, f"{kind} table {rel} unreadable ({type(exc).__name__})")
                    continue
                if kind == "tokens":
                    if t.num_rows != s.n_tokens:
                        rep.add(where, f"tokens table has {t.num_rows} rows, plan says {s.n_tokens}")
                    if "row" in t.column_names and t.num_rows:
                        rows = t.column("row").to_numpy()
                        if rows.min() < s.row_start or rows.max() >= s.row_start + s.n_rows_padded:
                            rep.add(where, "tokens table `row` values fall outside the shard's rows")
                elif t.num_rows != s.example_end - s.example_start:
                    rep.add(where, f"examples table has {t.num_rows} rows, plan says {s.example_end - s.example_start}")
            for li in range(n_layers):
                label = layers[li] if li < len(layers) else f"position {li}"
                _check_chunks(fs, base, hmeta, layout.HIDDEN, rec, li, label, s.row_start, s.n_rows_padded,
                              s.n_rows_padded, rep, lambda L, w=where: f"{w}, layer {L}")

        if check_static and smeta is not None:
            rec = _read_commit(fs, base, "static", rep, "static embeddings")
            if rec is None:
                missing_commits += 1
            else:
                if rec.config_fingerprint != fingerprint:
                    rep.add("static embeddings", "config_fingerprint differs from the manifest's")
                vocab = smeta["shape"][0]
                _check_chunks(fs, base, smeta, layout.STATIC, rec, 0, None, 0, vocab, vocab, rep,
                              lambda L: "static embeddings")
        if missing_commits and st.manifest.get("complete"):
            rep.add("manifest", f"says complete but {missing_commits} commit record(s) are missing or unreadable")
        # The manifest's summary of how shards were written must be the records' (stores from before
        # 2026-11-25 have neither).
        summary = st.manifest.get("written_with")
        if summary and not missing_commits:
            expected = summarize_written_with(records)
            if summary != expected:
                rep.add("manifest", f"written_with does not match the commit records' ({expected})")
    return rep
