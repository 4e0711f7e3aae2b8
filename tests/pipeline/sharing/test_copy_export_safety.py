"""copy and export never destroy what they were not asked to replace: the source store, the folder
holding it, or anything that is not a previous output. Also: export's output types and `--layer
static`, and a damaged root zarr.json reported as damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.errors import StoreError
from pipeline.sharing.validate import validate_store
from pipeline.store.reader import open_store


def _one_line_error(capsys, code, rc) -> str:
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("layerprobe: error:"), err
    return lines[0]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def runs(built_store, tmp_path) -> Path:
    """runs/a.zarr and runs/b.zarr: two stores side by side in one folder."""
    root = tmp_path / "runs"
    for name in ("a.zarr", "b.zarr"):
        shutil.copytree(built_store, root / name)
    return root


# -- copy: where the destination may be --------------------------------------------------------------
def test_copy_into_the_folder_holding_the_source_is_refused_and_deletes_nothing(runs, capsys):
    before = _files(runs)
    for dst in (str(runs), str(runs) + "/", f"file://{runs}", str(runs.parent)):
        rc = main(["copy", str(runs / "a.zarr"), dst, "--overwrite"])
        assert "contains the source" in _one_line_error(capsys, 2, rc)
    assert _files(runs) == before
    assert validate_store(str(runs / "a.zarr")).ok and validate_store(str(runs / "b.zarr")).ok


def test_copy_into_another_store_is_refused(runs, capsys):
    before = _files(runs)
    rc = main(["copy", str(runs / "a.zarr"), str(runs / "b.zarr" / "nested.zarr")])
    assert "is inside the store" in _one_line_error(capsys, 2, rc)
    assert _files(runs) == before


def test_copy_into_the_source_itself_or_a_folder_inside_it_is_refused(runs, capsys):
    src = runs / "a.zarr"
    before = _files(src)
    for dst in (src / "sub.zarr", src / "meta", f"{runs}/./a.zarr/../a.zarr/x.zarr"):
        rc = main(["copy", str(src), str(dst), "--overwrite"])
        assert "is inside the source" in _one_line_error(capsys, 2, rc)
    (runs / "link.zarr").symlink_to(src)  # the same store under another name
    rc = main(["copy", str(src), str(runs / "link.zarr"), "--overwrite"])
    assert "same" in _one_line_error(capsys, 2, rc)
    assert _files(src) == before


def test_overlap_compares_normalised_urls():
    from pipeline.sharing.common import overlap

    assert overlap("s3://b/runs/a.zarr", "s3a://b/runs/") == "contains"
    assert overlap("s3://b/runs/a.zarr", "s3://b//runs/a.zarr/x/..") == "is"
    assert overlap("s3://b/runs/a.zarr", "s3://b/runs/a.zarr/sub") == "is inside"
    assert overlap("HTTP://Host.example/x.zarr", "http://host.example/x.zarr/") == "is"
    assert overlap("gcs://b/x.zarr", "gs://b") == "contains"
    assert overlap("s3://b/runs/a.zarr", "s3://b/runs/a.zarr2") is None     # a prefix is not a parent
    assert overlap("s3://b/runs/a.zarr", "gs://b/runs") is None
    assert overlap("/data/a.zarr", "s3://data/a.zarr") is None


# -- copy --overwrite: only ever a layerprobe store ---------------------------------------------------
def test_copy_overwrite_replaces_only_stores_and_interrupted_copies(built_store, store, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    other_zarr = tmp_path / "other.zarr"
    other_zarr.mkdir()
    (other_zarr / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    (other_zarr / "hidden_states").mkdir()
    a_file = tmp_path / "file.zarr"
    a_file.write_text("not a store")
    for dst in (notes, other_zarr, a_file):
        before = _files(tmp_path)
        for extra in ([], ["--overwrite"]):
            rc = main(["copy", str(built_store), str(dst), *extra])
            line = _one_line_error(capsys, 2, rc)
            assert "not a layerprobe store" in line and "remove it yourself" in line
        assert _files(tmp_path) == before

    assert main(["copy", str(built_store), str(store), "--overwrite"]) == 0
    assert validate_store(str(store)).ok
    partial = tmp_path / "partial.zarr"  # a copy killed before it wrote its root zarr.json
    shutil.copytree(built_store / "hidden_states", partial / "hidden_states")
    assert main(["copy", str(built_store), str(partial), "--overwrite"]) == 0
    assert validate_store(str(partial)).ok
    target = tmp_path / "target.zarr"  # DST a link to a store: the link is replaced, the store kept
    shutil.copytree(built_store, target)
    (tmp_path / "link.zarr").symlink_to(target)
    before = _files(target)
    assert main(["copy", str(store), str(tmp_path / "link.zarr"), "--overwrite"]) == 0
    assert not (tmp_path / "link.zarr").is_symlink() and validate_store(str(tmp_path / "link.zarr")).ok
    assert _files(target) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no staging left behind


def test_copy_does_not_touch_the_destination_when_the_source_is_missing_files(built_store, store, tmp_path, capsys):
    dst = tmp_path / "dst.zarr"
    shutil.copytree(built_store, dst)
    before = _files(dst)
    (store / "hidden_states" / "c" / "1" / "2" / "0").unlink()
    rc = main(["copy", str(store), str(dst), "--overwrite"])
    assert "hidden_states/c/1/2/0" in _one_line_error(capsys, 2, rc)
    assert _files(dst) == before


def test_copy_overwrite_keeps_the_old_store_when_the_new_copy_fails_verification(built_store, store, tmp_path,
                                                                                 capsys):
    dst = tmp_path / "dst.zarr"
    shutil.copytree(built_store, dst)
    before = _files(dst)
    chunk = store / "hidden_states" / "c" / "1" / "2" / "0"
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    assert main(["copy", str(store), str(dst), "--overwrite"]) == 1
    assert "left unchanged" in capsys.readouterr().err
    assert _files(dst) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_copy_to_s3_keeps_the_destination_when_the_source_is_missing_files(built_store, store, s3_bucket,
                                                                          s3_endpoint, capsys):
    s3 = f"s3://{s3_bucket}/x.zarr"
    so = ["--storage-option", f"endpoint_url={s3_endpoint}"]
    assert main(["copy", str(built_store), s3, *so]) == 0
    (store / "meta" / "tables" / "tokens" / "shard-00001.parquet").unlink()
    rc = main(["copy", str(store), s3, *so, "--overwrite"])
    assert "shard-00001.parquet" in _one_line_error(capsys, 2, rc)
    assert main(["validate", s3, *so]) == 0


def _flip_last_byte(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))


def test_copy_overwrite_to_s3_keeps_the_destination_when_the_source_is_damaged(built_store, store, s3_bucket,
                                                                              s3_endpoint, capsys):
    # An object store has no rename: its old store is deleted before the copy is written. A source
    # whose files are all there but whose bytes are damaged must be caught before that delete.
    s3 = f"s3://{s3_bucket}/x.zarr"
    so = ["--storage-option", f"endpoint_url={s3_endpoint}"]
    assert main(["copy", str(built_store), s3, *so]) == 0
    capsys.readouterr()
    _flip_last_byte(store / "hidden_states" / "c" / "1" / "2" / "0")
    assert main(["copy", str(store), s3, *so, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"the source {store} is damaged" in err and "left unchanged" in err
    assert main(["validate", s3, *so]) == 0


def test_a_copy_of_a_damaged_source_blames_the_source_and_leaves_no_copy(store, tmp_path, capsys):
    _flip_last_byte(store / "hidden_states" / "c" / "1" / "2" / "0")
    dst = tmp_path / "new.zarr"
    assert main(["copy", str(store), str(dst)]) == 1
    out, err = capsys.readouterr()
    assert "checksum mismatch" in out and f"{store}: 3/3 shards committed" in out  # the source's report
    assert f"the source {store} is damaged" in err and "the damaged copy was removed" in err
    assert not dst.exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.zarr", "https://example.org/x.zarr"])
def test_copy_to_an_http_url_is_refused_before_anything_is_read(built_store, url, capsys):
    rc = main(["copy", str(built_store), url, "--overwrite"])
    assert "http(s) URLs are read-only" in _one_line_error(capsys, 2, rc)


# -- export: where --to may be ---------------------------------------------------------------------------
def test_export_to_a_url_is_refused_and_creates_nothing_locally(built_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["export", str(built_store), "--layer", "1", "--to", "http://127.0.0.1:9/e.parquet"])
    assert "is a URL; export writes a local file" in _one_line_error(capsys, 2, rc)
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_file_url_writes_that_path(built_store, tmp_path):
    out = tmp_path / "e.parquet"
    assert main(["export", str(built_store), "--layer", "1", "--to", f"file://{out}"]) == 0
    assert pq.read_table(out).num_rows > 0


def test_export_refuses_the_store_its_parent_and_paths_inside_it(built_store, tmp_path, capsys):
    r2 = tmp_path / "r2"
    shutil.copytree(built_store, r2 / "a.zarr")
    shutil.copytree(built_store, r2 / "plain")  # a store without the .zarr suffix
    shutil.copytree(built_store, r2 / "b.zarr")
    before = _files(r2)
    for st, to, rel in (("a.zarr", "a.zarr", "is the store"), ("plain", "plain", "is the store"),
                        ("plain", "plain/", "is the store"), ("a.zarr", ".", "contains the store"),
                        ("plain", "..", "contains the store"), ("a.zarr", "a.zarr/l3.parquet", "is inside"),
                        ("plain", "plain/meta", "is inside")):
        rc = main(["export", str(r2 / st), "--layer", "3", "--to", str(r2 / to), "--overwrite"])
        assert rel in _one_line_error(capsys, 2, rc)
    assert _files(r2) == before


def test_export_overwrite_replaces_only_a_previous_export(built_store, tmp_path, capsys):
    import datasets

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    zarrish = tmp_path / "zarrish"  # has datasets' file names, but also a zarr group inside
    (zarrish / "sub").mkdir(parents=True)
    (zarrish / "state.json").write_text("{}")
    (zarrish / "sub" / "zarr.json").write_text("{}")
    pq_dir = tmp_path / "d.parquet"
    pq_dir.mkdir()
    (pq_dir / "part-0.parquet").write_text("x")
    data = tmp_path / "data.parquet"        # someone's dataset, e.g. the store's own source
    pq.write_table(pa.table({"text": ["a sentence"]}), data)
    before = _files(tmp_path)
    for out in (notes, zarrish, pq_dir, data):
        rc = main(["export", str(built_store), "--layer", "1", "--to", str(out), "--overwrite"])
        line = _one_line_error(capsys, 2, rc)
        assert "remove it yourself" in line, line
    assert _files(tmp_path) == before

    ds_dir, pq_file = tmp_path / "ds", tmp_path / "l.parquet"
    for out in (ds_dir, pq_file):
        assert main(["export", str(built_store), "--layer", "1", "--to", str(out)]) == 0
        assert main(["export", str(built_store), "--layer", "3", "--to", str(out), "--overwrite"]) == 0
    st = open_store(str(built_store))
    np.testing.assert_allclose(np.asarray(datasets.load_from_disk(str(ds_dir)).with_format("numpy")["vector"]),
                               st.layer(3))
    np.testing.assert_array_equal(np.stack(pq.read_table(pq_file).column("vector").to_numpy(zero_copy_only=False)),
                                  st.layer(3))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# -- export: output types, --layer static -----------------------------------------------------------------
def test_export_refuses_file_extensions_it_does_not_write(built_store, tmp_path, capsys):
    for name in ("l3.csv", "l3.json", "l3.npy", "l3.arrow", "l3.zarr"):
        rc = main(["export", str(built_store), "--layer", "3", "--to", str(tmp_path / name)])
        line = _one_line_error(capsys, 2, rc)
        assert "not supported" in line and ".parquet file" in line and "datasets.Dataset" in line
    assert list(tmp_path.iterdir()) == []
    # a trailing / says "directory" whatever the name looks like
    assert main(["export", str(built_store), "--layer", "3", "--to", str(tmp_path / "run.v2") + "/"]) == 0
    assert (tmp_path / "run.v2" / "dataset_info.json").exists()


def test_export_static_layer_is_each_tokens_embedding_row(built_store, tmp_path, capsys):
    import datasets

    st = open_store(str(built_store))
    want = st.static_embeddings()[st.tokens.column("token_id").to_numpy()]
    out = tmp_path / "static.parquet"
    assert main(["export", str(built_store), "--layer", "static", "--to", str(out)]) == 0
    t = pq.read_table(out)
    assert t.drop(["vector"]).equals(st.tokens)
    np.testing.assert_array_equal(np.stack(t.column("vector").to_numpy(zero_copy_only=False)), want)
    assert json.loads(t.schema.metadata[b"layerprobe_export"])["layer"] == "static"
    d = tmp_path / "ds_all"
    assert main(["export", str(built_store), "--layer", "static", "--to", str(d)]) == 0
    np.testing.assert_array_equal(np.asarray(datasets.load_from_disk(str(d)).with_format("numpy")["vector"]), want)
    with pytest.raises(SystemExit):
        main(["export", str(built_store), "--layer", "embeddings", "--to", str(tmp_path / "x.parquet")])
    assert "'static'" in capsys.readouterr().err


# -- a damaged root zarr.json is damage, not absence ------------------------------------------------------
def test_truncated_root_zarr_json_is_reported_as_corrupt(store, tmp_path, capsys):
    root = store / "zarr.json"
    root.write_bytes(root.read_bytes()[:100])
    with pytest.raises(StoreError, match=r"zarr.json is corrupt \(not valid JSON"):
        open_store(str(store))
    for cmd in (["validate", str(store)], ["inspect", str(store)],
                ["export", str(store), "--layer", "1", "--to", str(tmp_path / "x.parquet")]):
        line = _one_line_error(capsys, 2, main(cmd))
        assert "zarr.json is corrupt" in line and "no layerprobe store" not in line
    root.write_text('"a JSON string"')
    with pytest.raises(StoreError, match="zarr.json is corrupt"):
        open_store(str(store))
    root.write_text(json.dumps({"zarr_format": 3, "node_type": "array"}))
    with pytest.raises(StoreError, match="zarr.json is corrupt .*node_type='array'"):
        open_store(str(store))
    root.unlink()
    with pytest.raises(StoreError, match="no layerprobe store at"):
        open_store(str(store))
    with pytest.raises(StoreError, match="no layerprobe store at"):
        open_store(str(tmp_path / "nothing-here"))


def test_a_path_inside_a_store_names_the_store_and_never_calls_it_damaged(store, tmp_path, capsys):
    # STORE/hidden_states has an array's zarr.json: before, this said "corrupt ... delete it".
    for inner in (store / "hidden_states", store / "meta"):
        with pytest.raises(StoreError, match=f"{inner} lies inside the layerprobe store {store}: pass the store"):
            open_store(str(inner))
    for cmd in (["inspect", str(store / "hidden_states")], ["validate", str(store / "hidden_states")],
                ["probe", "wic", "--store", str(store / "hidden_states"), "--out", str(tmp_path / "w")]):
        line = _one_line_error(capsys, 2, main(cmd))
        assert "lies inside the layerprobe store" in line and "delete" not in line and "corrupt" not in line
    assert open_store(str(store)).complete  # and the store itself is untouched
