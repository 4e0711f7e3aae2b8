"""inspect / validate / copy / export against a real store, over local paths, HTTP and S3 (moto)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.errors import StoreError
from pipeline.sharing.validate import validate_store
from pipeline.store import layout
from pipeline.store.fs import join
from pipeline.store.reader import open_store

REPO = Path(__file__).resolve().parents[3]


def _one_line_error(capsys, code, rc):
    err = capsys.readouterr().err
    assert rc == code
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("layerprobe: error:"), err
    return lines[0]


def _set_manifest(store: Path, **changes) -> None:
    p = store / "zarr.json"
    meta = json.loads(p.read_text())
    meta["attributes"]["layerprobe"].update(changes)
    p.write_text(json.dumps(meta))


# -- validate --------------------------------------------------------------------------------------
def test_validate_clean_store(store, capsys):
    rep = validate_store(str(store))
    assert rep.ok, rep.problems
    st = open_store(str(store))
    n_layers = len(st.layers)
    static = st.root[layout.STATIC]
    n_static = -(-static.shape[0] // static.chunks[0])
    assert rep.n_chunks == n_layers * st.plan.n_rows // st.plan.chunk_rows + n_static
    assert main(["validate", str(store)]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_finds_deleted_chunk(store, capsys):
    st = open_store(str(store))
    layer_pos, hf_layer = 2, st.layers[2]
    chunk = store / "hidden_states" / "c" / str(layer_pos) / "1" / "0"  # rows 16-31: shard 0
    chunk.unlink()
    rep = validate_store(str(store))
    assert [str(p) for p in rep.problems] == [f"shard 0, layer {hf_layer}: chunk rows 16-31 missing"]
    assert main(["validate", str(store)]) == 1
    assert f"shard 0, layer {hf_layer}: chunk rows 16-31 missing" in capsys.readouterr().out


def test_validate_finds_corrupted_chunk(store):
    st = open_store(str(store))
    s1 = st.plan.shards[1]
    c = s1.row_start // st.plan.chunk_rows
    chunk = store / "hidden_states" / "c" / "3" / str(c) / "0"
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 8):
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))
    rep = validate_store(str(store))
    assert len(rep.problems) == 1, rep.problems
    msg = str(rep.problems[0])
    assert msg.startswith(f"shard 1, layer {st.layers[3]}: chunk rows {s1.row_start}-{s1.row_start + 15}")
    assert "checksum mismatch" in msg or "corrupt" in msg


def test_validate_finds_garbage_chunk_without_crashing(store):
    (store / "hidden_states" / "c" / "0" / "0" / "0").write_bytes(b"not a blosc frame at all" * 3)
    rep = validate_store(str(store))
    assert len(rep.problems) == 1
    assert str(rep.problems[0]).startswith("shard 0, layer 0: chunk rows 0-15 corrupt (cannot decode: RuntimeError: ")


def test_validate_finds_table_tampering_and_fingerprint(store):
    (store / "meta/tables/tokens/shard-00001.parquet").write_bytes(
        (store / "meta/tables/tokens/shard-00000.parquet").read_bytes())
    rec_path = store / "meta/commits/shard-00000.json"
    rec = json.loads(rec_path.read_text())
    rec["config_fingerprint"] = "0" * 32
    rec_path.write_text(json.dumps(rec))
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert any(m.startswith("shard 1: tokens table") and "checksum mismatch" in m for m in msgs), msgs
    assert any(m.startswith("shard 0: config_fingerprint") for m in msgs), msgs


def test_validate_manifest_stats(store):
    _set_manifest(store, stats={"n_examples": 7, "n_tokens": 1, "n_rows": 3, "n_shards": 9, "n_truncated": 0})
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert any("stats.n_rows=3" in m for m in msgs) and any("stats.n_shards=9" in m for m in msgs), msgs


def test_missing_commit_record_is_incomplete(store, capsys):
    n = len(open_store(str(store)).plan.shards)
    (store / "meta/commits/shard-00001.json").unlink()
    _set_manifest(store, complete=False, completed_at=None)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(str(store))
    rep = validate_store(str(store))
    assert [str(p) for p in rep.problems] == [
        "shard 1: commit record missing (shard not committed: extraction unfinished or interrupted)"]
    assert main(["validate", str(store)]) == 1
    capsys.readouterr()
    assert main(["inspect", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"INCOMPLETE: {n - 1}/{n} shards committed" in out and "NOT committed" in out
    # export (like probes) refuses partial data, with one line
    rc = main(["export", str(store), "--layer", "1", "--to", str(store.parent / "x.parquet")])
    assert "incomplete" in _one_line_error(capsys, 2, rc)


def test_commit_records_not_the_manifest_flag_decide_what_is_visible(store, capsys):
    (store / "meta/commits/shard-00000.json").unlink()   # the manifest still says complete
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert "manifest: says complete but 1 commit record(s) are missing or unreadable" in msgs
    with pytest.raises(StoreError, match="incomplete"):
        open_store(str(store))
    assert 0 not in open_store(str(store), allow_incomplete=True).committed
    rc = main(["export", str(store), "--layer", "1", "--to", str(store.parent / "x.parquet")])
    assert "incomplete" in _one_line_error(capsys, 2, rc)


def test_a_missing_static_commit_record_makes_the_store_incomplete_for_probes_and_export(store, capsys):
    # "complete" covers the static table too: without its record the table may be unwritten zeros.
    (store / "meta/commits/static.json").unlink()
    with pytest.raises(StoreError, match="incomplete: the static embeddings not committed"):
        open_store(str(store))
    partial = open_store(str(store), allow_incomplete=True)
    assert not partial.complete and partial.layer(1).shape[0] > 0  # the shards are still readable
    with pytest.raises(StoreError, match="static embeddings are not committed"):
        partial.static_embeddings([0, 1])
    rc = main(["export", str(store), "--layer", "static", "--to", str(store.parent / "x.parquet")])
    assert "static embeddings not committed" in _one_line_error(capsys, 2, rc)


def test_validate_finds_an_edited_manifest(store):
    settings = open_store(str(store)).manifest["settings"]
    _set_manifest(store, keep="targets")
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert msgs == ["manifest: keep='targets' but settings.keep='all'"]
    _set_manifest(store, settings={**settings, "keep": "targets"})
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert len(msgs) == 1 and msgs[0].startswith("manifest: config_fingerprint") and "was edited" in msgs[0]


def test_validate_checks_the_manifests_written_with_against_the_commit_records(store):
    summary = open_store(str(store)).manifest["written_with"]
    assert summary["batch_tokens"] and validate_store(str(store)).ok
    _set_manifest(store, written_with={**summary, "batch_tokens": {"1": 1}})
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert len(msgs) == 1 and msgs[0].startswith("manifest: written_with does not match the commit records'")


def test_missing_or_corrupt_data_is_an_error_never_zeros(store, tmp_path, capsys):
    (store / "hidden_states" / "c" / "1" / "1" / "0").unlink()            # layer position 1, rows 16-31
    (store / "hidden_states" / "c" / "2" / "0" / "0").write_bytes(b"garbage" * 9)
    st = open_store(str(store))
    with pytest.raises(StoreError, match="chunk c/1/1/0 is missing"):
        st.layer(st.layers[1], [20])
    with pytest.raises(StoreError, match="chunk c/2/0/0 is corrupt"):
        st.layer(st.layers[2])
    for layer in (st.layers[1], st.layers[2]):
        rc = main(["export", str(store), "--layer", str(layer), "--to", str(tmp_path / f"{layer}.parquet")])
        assert "chunk c/" in _one_line_error(capsys, 2, rc)
        assert not (tmp_path / f"{layer}.parquet").exists()
    tokens = store / "meta/tables/tokens/shard-00000.parquet"
    tokens.write_bytes(tokens.read_bytes()[:100])
    with pytest.raises(StoreError, match="shard-00000.parquet is corrupt"):
        open_store(str(store)).tokens


def test_layer_array_and_dtype_must_agree_with_the_manifest(store):
    layers = open_store(str(store)).layers
    _set_manifest(store, layers=layers[::-1])
    with pytest.raises(StoreError, match="the layer array says"):
        open_store(str(store)).layer(layers[0])
    _set_manifest(store, layers=layers, dtype="float16")
    with pytest.raises(StoreError, match="hidden_states is float32 but the manifest says float16"):
        open_store(str(store)).layer(layers[0])


def test_complete_store_has_consolidated_metadata_checked_by_validate(store):
    root = json.loads((store / "zarr.json").read_text())
    listed = root["consolidated_metadata"]["metadata"]
    assert {layout.HIDDEN, layout.LAYER_COORD, layout.STATIC} <= set(listed)
    listed[layout.HIDDEN]["shape"][1] += 16
    (store / "zarr.json").write_text(json.dumps(root))
    msgs = [str(p) for p in validate_store(str(store)).problems]
    assert msgs == ["consolidated metadata: hidden_states.shape differs from hidden_states/zarr.json"]


def test_not_a_store(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for cmd in (["validate"], ["inspect"], ["copy"]):
        args = cmd + [str(tmp_path / "empty")] + ([str(tmp_path / "dst")] if cmd == ["copy"] else [])
        rc = main(args)
        _one_line_error(capsys, 2, rc)
    (tmp_path / "data.csv").write_text("text\nhello\n")
    for cmd in (["validate"], ["inspect"], ["probe", "wic", "--out", str(tmp_path / "o"), "--store"]):
        rc = main(cmd + [str(tmp_path / "data.csv")])
        assert "data.csv is a file, not a store" in _one_line_error(capsys, 2, rc)


# -- security --------------------------------------------------------------------------------------
def test_join_refuses_escaping_paths():
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            join("/store", bad)


def test_commit_record_naming_outside_path_is_refused(store, tmp_path, capsys):
    secret = tmp_path / "x.parquet"
    secret.write_bytes(b"outside")
    rec_path = store / "meta/commits/shard-00000.json"
    rec = json.loads(rec_path.read_text())
    rec["table_sha256"]["../../x.parquet"] = "0" * 64
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(StoreError, match="outside the store"):
        validate_store(str(store))
    rc = main(["validate", str(store)])
    assert "outside the store" in _one_line_error(capsys, 2, rc)


def test_plan_naming_outside_path_is_refused(store, capsys):
    plan_path = store / "meta/plan.json"
    plan = json.loads(plan_path.read_text())
    plan["shards"][0]["shard_id"] = "../../x"
    plan_path.write_text(json.dumps(plan))
    for cmd in ("inspect", "validate"):
        rc = main([cmd, str(store)])
        _one_line_error(capsys, 2, rc)


def test_nothing_is_unpickled(store, tmp_path, monkeypatch):
    """A store holds JSON, Parquet and raw Zarr chunks only; no command unpickles anything."""
    allowed = {".json", ".parquet"}
    for p in store.rglob("*"):
        if p.is_file():
            rel = p.relative_to(store).as_posix()
            assert p.suffix in allowed or "/c/" in rel, rel
    (store / "meta" / "evil.pkl").write_bytes(pickle.dumps({"x": 1}))

    def refuse(*a, **k):
        raise AssertionError("something unpickled store data")

    import datasets  # noqa: F401  (imported before the patch: its import machinery is not store data)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert validate_store(str(store)).ok
    assert main(["inspect", str(store)]) == 0
    assert main(["copy", str(store), str(tmp_path / "c.zarr")]) == 0
    assert main(["export", str(store), "--layer", "1", "--to", str(tmp_path / "e.parquet")]) == 0


# -- HTTP ------------------------------------------------------------------------------------------
def test_http_layers_and_static(http_url, built_store):
    url = f"{http_url}/s.zarr"
    remote, local = open_store(url), open_store(str(built_store))
    assert remote.committed == local.committed
    for L in remote.layers:
        np.testing.assert_array_equal(remote.layer(L), local.layer(L))
    np.testing.assert_array_equal(remote.static_embeddings(), local.static_embeddings())
    # URL stores are opened read-only
    assert remote.root.store.read_only
    with pytest.raises(Exception):
        remote.root["layer"][0] = 99


def test_http_tables_and_row_selection(http_url, built_store):
    remote, local = open_store(f"{http_url}/s.zarr"), open_store(str(built_store))
    assert remote.tokens.equals(local.tokens)
    assert remote.examples.equals(local.examples)
    rows = np.array([0, 5, 60, 3])
    np.testing.assert_array_equal(remote.layer(2, rows), local.layer(2, rows))


def test_http_inspect_validate_export(http_url, built_store, tmp_path, capsys):
    url = f"{http_url}/s.zarr"
    assert main(["inspect", url]) == 0
    out = capsys.readouterr().out
    n = len(open_store(str(built_store)).plan.shards)
    assert f"complete: {n}/{n} shards committed" in out and "layers:     [0, 1, 2, 3]" in out
    assert main(["validate", url]) == 0
    assert "OK" in capsys.readouterr().out
    out_pq = tmp_path / "l2.parquet"
    assert main(["export", url, "--layer", "2", "--to", str(out_pq)]) == 0
    t = pq.read_table(out_pq)
    np.testing.assert_array_equal(np.stack(t.column("vector").to_numpy(zero_copy_only=False)),
                                  open_store(str(built_store)).layer(2))


def test_host_without_directory_listings(http_url_no_listing, http_root, built_store, capsys):
    url = f"{http_url_no_listing}/s.zarr"
    assert open_store(url).complete
    assert main(["inspect", url]) == 0
    out = capsys.readouterr().out
    n = len(open_store(str(built_store)).plan.shards)
    assert f"complete: {n}/{n} shards committed, static embeddings committed" in out
    assert "bytes:      unknown" in out   # not "0 B"
    import xarray as xr

    ds = xr.open_zarr(url)                # consolidated metadata: no listing needed
    np.testing.assert_array_equal(ds["hidden_states"].sel(layer=2).values[:10], open_store(str(built_store)).layer(2)[:10])
    partial = http_root / "partial.zarr"
    shutil.copytree(built_store, partial)
    try:
        (partial / "meta/commits/shard-00001.json").unlink()
        with pytest.raises(StoreError, match="incomplete: 1 of"):
            open_store(f"{http_url_no_listing}/partial.zarr")
        assert 1 not in open_store(f"{http_url_no_listing}/partial.zarr", allow_incomplete=True).committed
    finally:
        shutil.rmtree(partial)


def test_http_missing_store_is_one_line(http_url, capsys):
    rc = main(["validate", f"{http_url}/nope.zarr"])
    _one_line_error(capsys, 2, rc)


# -- S3 (moto) -------------------------------------------------------------------------------------
def test_copy_local_s3_local(built_store, s3_bucket, s3_endpoint, tmp_path, capsys):
    s3 = f"s3://{s3_bucket}/x.zarr"
    so = ["--storage-option", f"endpoint_url={s3_endpoint}"]
    assert main(["copy", str(built_store), s3, *so]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["validate", s3, *so]) == 0
    # refuses to overwrite without --overwrite, one line
    rc = main(["copy", str(built_store), s3, *so])
    assert "already exists" in _one_line_error(capsys, 2, rc)
    assert main(["copy", str(built_store), s3, *so, "--overwrite"]) == 0
    back = tmp_path / "back.zarr"
    assert main(["copy", s3, str(back), *so]) == 0
    assert main(["validate", str(back)]) == 0
    a, b = open_store(str(built_store)), open_store(str(back))
    for L in a.layers:
        np.testing.assert_array_equal(a.layer(L), b.layer(L))
    assert a.tokens.equals(b.tokens) and a.examples.equals(b.examples)
    np.testing.assert_array_equal(a.static_embeddings(), b.static_embeddings())
    # the S3 store opens read-only with the same options
    r = open_store(s3, storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    assert r._root.store.read_only
    np.testing.assert_array_equal(r.layer(1), a.layer(1))


def test_a_copy_damaged_in_transfer_fails_verification_and_is_removed(built_store, tmp_path, monkeypatch, capsys):
    from pipeline.sharing import copy as copy_mod

    real = copy_mod.write_bytes_atomic

    def flaky(fs, path, data):  # one chunk arrives with its last byte flipped
        if path.endswith("hidden_states/c/1/2/0"):
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        real(fs, path, data)

    monkeypatch.setattr(copy_mod, "write_bytes_atomic", flaky)
    dst = tmp_path / "c.zarr"
    assert main(["copy", str(built_store), str(dst)]) == 1
    err = capsys.readouterr().err
    assert f"copy to {dst} failed verification (1 problem(s)); the damaged copy was removed" in err
    assert not dst.exists()


def test_copy_writes_commit_records_and_manifest_last(built_store, tmp_path, monkeypatch):
    from pipeline.sharing import copy as copy_mod

    order = []
    real = copy_mod.write_bytes_atomic
    monkeypatch.setattr(copy_mod, "write_bytes_atomic", lambda fs, p, d: (order.append(p), real(fs, p, d)))
    copy_mod.copy_store(str(built_store), str(tmp_path / "c.zarr"))
    rel = [p.split("c.zarr/", 1)[1] for p in order]
    commits = [i for i, k in enumerate(rel) if k.startswith("meta/commits/")]
    assert rel[-1] == "zarr.json"
    assert commits and min(commits) == len(rel) - 1 - len(commits)


# -- export ----------------------------------------------------------------------------------------
def test_export_parquet_and_dataset(built_store, tmp_path, capsys):
    import datasets

    st = open_store(str(built_store))
    out = tmp_path / "l1.parquet"
    assert main(["export", str(built_store), "--layer", "1", "--to", str(out)]) == 0
    t = pq.read_table(out)
    assert t.column_names == st.tokens.column_names + ["vector"]
    assert str(t.schema.field("vector").type) == "fixed_size_list<element: float>[32]"
    assert t.drop(["vector"]).equals(st.tokens)
    np.testing.assert_array_equal(np.stack(t.column("vector").to_numpy(zero_copy_only=False)), st.layer(1))
    capsys.readouterr()
    rc = main(["export", str(built_store), "--layer", "1", "--to", str(out)])
    assert "already exists" in _one_line_error(capsys, 2, rc)
    rc = main(["export", str(built_store), "--layer", "9", "--to", str(tmp_path / "z.parquet")])
    assert "layer 9 is not in this store" in _one_line_error(capsys, 2, rc)

    d = tmp_path / "ds"
    assert main(["export", str(built_store), "--layer", "3", "--to", str(d)]) == 0
    ds = datasets.load_from_disk(str(d))
    assert ds.column_names == st.tokens.column_names + ["vector"]
    assert json.loads(ds.info.description)["layer"] == 3    # provenance survives save_to_disk
    np.testing.assert_allclose(np.asarray(ds.with_format("numpy")["vector"]), st.layer(3))


# -- plain zarr + pyarrow, xarray ------------------------------------------------------------------
PLAIN_READER = r'''
import sys
for name in ("pipeline", "jobs", "schemas"):
    sys.modules[name] = None          # importing layerprobe code would now fail
import json, numpy as np, zarr, pyarrow.parquet as pq, pyarrow.compute as pc
store, L, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
root = zarr.open_group(store, mode="r")
manifest = root.attrs["layerprobe"]; assert manifest["format_version"] == 1
plan = json.load(open(f"{store}/meta/plan.json"))
shard = plan["shards"][0]                                 # the first example lives in shard 0
assert (f"{store}/meta/commits/shard-{shard['shard_id']:05d}.json") and __import__("os").path.exists(f"{store}/meta/commits/shard-{shard['shard_id']:05d}.json")
tokens = pq.read_table(f"{store}/meta/tables/tokens/shard-{shard['shard_id']:05d}.parquet")
tokens = tokens.filter(pc.equal(tokens["example_id"], 0)).sort_by("position")
li = list(root["layer"][:]).index(L)                      # HF index -> position on the layer axis
vecs = root["hidden_states"].get_orthogonal_selection((li, tokens["row"].to_numpy(), slice(None)))
np.save(out, vecs)
'''


def test_plain_zarr_pyarrow_reader(built_store, tmp_path):
    out = tmp_path / "v.npy"
    subprocess.run([sys.executable, "-c", PLAIN_READER, str(built_store), "2", str(out)], check=True,
                   cwd=tmp_path, timeout=60)
    st = open_store(str(built_store))
    tok = st.tokens.to_pandas()
    rows = tok.index[tok.example_id == 0][tok[tok.example_id == 0].position.argsort()]
    np.testing.assert_array_equal(np.load(out), st.layer(2, rows.to_numpy()))


def test_format_md_example_runs(built_store, tmp_path):
    """The example in schemas/FORMAT.md runs as written against a real store."""
    text = (REPO / "schemas" / "FORMAT.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"activations.zarr"', repr(str(built_store)))
    env = {**os.environ, "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, "-c", "import sys\nfor n in ('pipeline','jobs','schemas'): sys.modules[n]=None\n" + code],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    vec = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    st = open_store(str(built_store))
    assert vec.shape == (st.manifest["model"]["d_model"],)


def test_xarray_open_zarr(built_store):
    import xarray as xr

    ds = xr.open_zarr(str(built_store))
    assert ds["hidden_states"].dims == ("layer", "row", "hidden")
    assert list(ds["layer"].values) == open_store(str(built_store)).layers
    np.testing.assert_array_equal(ds["hidden_states"].sel(layer=2).values[:10], open_store(str(built_store)).layer(2)[:10])


def test_both_arrays_say_their_stored_and_model_dtype_for_plain_zarr_readers(built_store):
    import zarr

    root = zarr.open_group(str(built_store), mode="r")
    manifest = root.attrs["layerprobe"]
    for name in ("hidden_states", "static_embeddings"):
        attrs = root[name].attrs
        assert attrs["stored_dtype"] == manifest["dtype"] == str(root[name].dtype)
        assert attrs["model_dtype"] == manifest["model"]["dtype"]


def test_export_of_a_store_with_a_corrupt_table_says_run_validate(store, capsys):
    table = store / "meta" / "tables" / "tokens" / "shard-00001.parquet"
    table.write_bytes(table.read_bytes()[:-20] + b"\0" * 20)  # a damaged footer
    rc = main(["export", str(store), "--layer", "1", "--to", str(store.parent / "x.parquet")])
    line = _one_line_error(capsys, 2, rc)
    assert "shard-00001.parquet is corrupt" in line and "run `layerprobe validate` on the store" in line


def test_hidden_states_metadata_edited_against_the_plan_says_run_validate(store, capsys):
    # Consolidated metadata (what zarr opens) claiming more rows than the plan: reads would index
    # rows that no shard wrote.
    meta = json.loads((store / "zarr.json").read_text())
    entry = meta["consolidated_metadata"]["metadata"]["hidden_states"]
    entry["shape"][1] += 64
    (store / "zarr.json").write_text(json.dumps(meta))
    rc = main(["export", str(store), "--layer", "1", "--to", str(store.parent / "x.parquet")])
    line = _one_line_error(capsys, 2, rc)
    assert "hidden_states has shape" in line and "run `layerprobe validate` on the store" in line


def test_inspect_says_when_a_store_holds_only_the_first_examples_of_its_source(tiny_bert, corpus, tmp_path, capsys):
    from pipeline.executors.extract_job import run_extract
    from schemas.job import ExtractSpec

    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    out = tmp_path / "s.zarr"
    run_extract(ExtractSpec(model=str(tiny_bert), data=str(data), out=str(out), limit=3), executor="local",
                progress=False)
    assert main(["inspect", str(out)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("dataset:"))
    assert "3 examples (--limit 3: the first of the source)" in line
