"""Sources keep their examples compactly and give back exactly the Example objects the reader made."""

from __future__ import annotations

import pytest

from pipeline.readers import read_source
from pipeline.readers.base import CompactExamples, Example, Source
from pipeline.samples import SAMPLES_DIR


@pytest.mark.parametrize("sample", ["wic", "ud-english-ewt"])
def test_examples_come_back_equal_to_what_the_reader_built(sample):
    src = read_source(str(SAMPLES_DIR / sample))
    assert isinstance(src.examples, CompactExamples)
    first = src.examples[0]
    assert isinstance(first, Example) and first.words and first.word_spans
    assert CompactExamples(src.examples[:50])[:] == src.examples[:50]
    assert [e.text for e in src.examples][-1] == src.examples[len(src.examples) - 1].text


def test_values_json_cannot_hold_are_kept_as_objects():
    raw = Example(text="a b", words=("a", "b"), word_spans=((0, 1), (2, 3)), columns={"blob": b"\x00"})
    plain = Example(text="c", words=("c",), word_spans=((0, 1),), target_span=(0, 1), target_word_id=0,
                    columns={"label": True, "heads": [0]})
    src = Source(examples=[raw, plain], path="p", format="text", columns=["blob"], fingerprint="f")
    assert src.examples[:] == [raw, plain]
    part = src.examples.part(0, 2)  # a shard's work item: the same records, not packed again
    assert part[:] == [raw, plain] and part._records[0] is src.examples._records[0]
    with pytest.raises(IndexError):
        src.examples[2]


@pytest.mark.parametrize("kind", ["wic", "ud-english-ewt", "jsonl"])
def test_readers_pack_each_example_as_they_build_it(kind, tmp_path, monkeypatch):
    """A reader that listed its Example objects and packed them at the end held all of them at once
    (~1.3 KB each: the driver's peak for the whole run); packed as built, only a few are alive."""
    import gc
    import json
    import weakref

    from pipeline.readers import base

    if kind == "jsonl":
        path = tmp_path / "s.jsonl"
        path.write_text("".join(json.dumps({"text": f"sentence number {i} here", "id": i}) + "\n"
                                for i in range(300)))
    else:
        path = SAMPLES_DIR / kind
    alive: list[weakref.ref] = []
    packed = most = 0
    pack = base._pack

    def counting_pack(example):
        nonlocal alive, packed, most
        gc.collect(0)
        alive = [r for r in alive if r() is not None] + [weakref.ref(example)]
        packed, most = packed + 1, max(most, len(alive))
        return pack(example)

    monkeypatch.setattr(base, "_pack", counting_pack)
    src = read_source(str(path))
    assert len(src.examples) >= 300 and packed == len(src.examples)
    assert most <= 3
