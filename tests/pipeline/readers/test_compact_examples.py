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
