"""The one reader of "is this a layerprobe store": the manifest in a folder's root zarr.json."""

import json

import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.store.fs import enclosing_store, root_manifest


@pytest.mark.parametrize("root, expected", [
    (None, None),                                                # a folder without zarr.json
    (b"{not json", None),                                        # truncated
    (b"\xff\xfe", None),                                         # not UTF-8
    (b'"a string"', None),                                       # JSON, not an object
    (b'{"attributes": []}', None),                               # malformed attributes
    (b'{"zarr_format": 3, "node_type": "group", "attributes": {}}', None),  # a plain Zarr group
    (b'{"attributes": {"layerprobe": "x"}}', None),              # a manifest that is not a mapping
    (b'{"attributes": {"layerprobe": {"format": "layerprobe-store"}}}', {"format": "layerprobe-store"}),
])
def test_root_manifest_is_the_manifest_or_none(root, expected, tmp_path):
    if root is not None:
        (tmp_path / "zarr.json").write_bytes(root)
    assert root_manifest(LocalFileSystem(), str(tmp_path)) == expected


def test_root_manifest_of_a_file_is_none(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert root_manifest(LocalFileSystem(), str(tmp_path / "f.txt")) is None


def test_enclosing_store_finds_the_store_above_a_path(tmp_path):
    store = tmp_path / "a.zarr"
    (store / "meta").mkdir(parents=True)
    (store / "zarr.json").write_text(json.dumps({"attributes": {"layerprobe": {"format": "layerprobe-store"}}}))
    assert enclosing_store(str(store / "meta" / "probes")) == str(store)
    assert enclosing_store(str(tmp_path / "elsewhere")) is None


def test_an_object_store_url_without_its_fsspec_backend_names_the_package(monkeypatch):
    import fsspec

    from pipeline.errors import StoreError
    from pipeline.store.fs import url_to_fs

    def no_backend(path, **kw):
        raise ImportError("Please install gcsfs to access Google Storage")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_backend)
    with pytest.raises(StoreError, match=r"gs:// needs a package that is not installed \(pip install gcsfs"):
        url_to_fs("gs://bucket/x.zarr")
