"""The examples table: one schema for every shard, whatever the source's columns hold."""

from __future__ import annotations

import json

import pyarrow as pa

from schemas.tables import JSON_TEXT, SourceColumnTypes


def test_source_column_types_unify_across_blocks_and_fall_back_to_json_text_for_mixed_kinds():
    rows = ([{"n": 1, "f": 1, "tag": None, "mixed": 1, "words": ["a"]}] * 3
            + [{"n": None, "f": 2.5, "tag": "x", "mixed": "one", "words": []}] * 3)
    types = SourceColumnTypes(["n", "f", "tag", "mixed", "words", "absent"])
    types.add(rows[:3])
    types.add(rows[3:])
    assert types.mixed == ["mixed"]
    assert types.types == {"n": pa.int64(), "f": pa.float64(), "tag": pa.string(), "mixed": JSON_TEXT,
                           "words": pa.list_(pa.string()), "absent": pa.null()}


def test_a_column_of_mixed_types_across_shards_is_stored_and_every_reader_can_open_it(tiny_bert, tmp_path, caplog):
    # 1 in the first shards, "str" in the later ones: each shard alone was writable, but no reader
    # (probes, open_store().examples) could concatenate int64 with string; and 1 beside "str" in
    # one shard crashed the extraction.
    from pipeline.executors.extract_job import run_extract
    from pipeline.store import open_store
    from schemas.job import ExtractSpec

    data = tmp_path / "mixed.jsonl"
    rows = ([{"text": f"The cat sat on mat {i}.", "x": 1, "y": i} for i in range(30)]
            + [{"text": f"A dog ran far {i}.", "x": "str", "y": None} for i in range(29)]
            + [{"text": "Both kinds here.", "x": [1, 2], "y": 2.5}])
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "s.zarr"
    run_extract(ExtractSpec(model=str(tiny_bert), data=str(data), out=str(out), shard_tokens=64, chunk_rows=16),
                executor="local", progress=False)
    assert "'x'" in caplog.text and "JSON text" in caplog.text
    s = open_store(out)
    assert len(s.plan.shards) > 2
    ex = s.examples
    assert ex.schema.field("x").type == pa.string() and ex.schema.field("y").type == pa.float64()
    x = ex.column("x").to_pylist()
    assert x[0] == "1" and x[30] == "str" and x[-1] == "[1, 2]"
    assert ex.column("y").to_pylist()[:2] == [0.0, 1.0] and ex.column("y").to_pylist()[30] is None
