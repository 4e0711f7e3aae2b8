"""What every reader produces: its `Example`s, kept compact, plus a description of the source."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One text the model will read.

    `words` and `word_spans` always describe `text`: for pre-split sources (CoNLL-U, WiC, a words
    column) text is the words joined by single spaces; otherwise words are the whitespace-separated
    pieces of text. `target_span` is a character span [start, end) into `text` (WiC's target word),
    or None. `columns` holds the source's own fields (scalars or lists of scalars), stored verbatim
    in the examples table.
    """

    text: str
    words: tuple[str, ...]
    word_spans: tuple[tuple[int, int], ...]
    target_span: tuple[int, int] | None = None
    target_word_id: int | None = None
    columns: dict[str, Any] = field(default_factory=dict)

    @property
    def target_word(self) -> str | None:
        if self.target_span is None:
            return None
        return self.text[self.target_span[0] : self.target_span[1]]


class CompactExamples(Sequence):
    """A source's examples kept as one JSON record each, rebuilt into `Example`s on access.

    The driver holds every example of a source until it has handed them to the workers. As objects
    a WiC sentence held ~1.3 KB (word and span tuples dominate: 20.9 MB for 16000, tracemalloc); as
    UTF-8 JSON ~0.2 KB (3.5 MB). Readers `append` each example as they build it, so the objects never
    all exist at once: a list of them, packed at the end, left the driver at its peak for the whole
    run (RSS held after reading 160k WiC sentences from a .jsonl: +203-209 MB that way, +62-69 MB
    packed as read, ~32 MB of it the records). An example whose columns JSON cannot hold (e.g.
    bytes) is kept as the object."""

    def __init__(self, examples: Iterable[Example] = ()):
        self._records: list[bytes | Example] = []
        self._columns: dict[str, None] = {}
        for e in examples:
            self.append(e)

    def append(self, example: Example) -> None:
        self._records.append(_pack(example))
        for k in example.columns:
            self._columns.setdefault(k, None)

    @property
    def column_names(self) -> list[str]:
        """Names present in the examples' columns, in first-seen order."""
        return list(self._columns)

    def part(self, start: int, end: int) -> CompactExamples:
        """Examples [start, end) still compact (records shared, nothing decoded or packed again): a
        shard's work item, small to hold on the driver and to send to a Ray worker."""
        part = CompactExamples()
        part._records = self._records[start:end]
        part._columns = dict(self._columns)  # the source's names (a part's examples use a subset)
        return part

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [_unpack(r) for r in self._records[i]]
        return _unpack(self._records[i])


def _pack(e: Example) -> bytes | Example:
    try:
        return json.dumps([e.text, e.words, e.word_spans, e.target_span, e.target_word_id, e.columns],
                          ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return e


def _unpack(record: bytes | Example) -> Example:
    if isinstance(record, Example):
        return record
    text, words, spans, target, target_word_id, columns = json.loads(record)
    return Example(text=text, words=tuple(words), word_spans=tuple(map(tuple, spans)),
                   target_span=None if target is None else tuple(target), target_word_id=target_word_id,
                   columns=columns)


@dataclass(frozen=True)
class Source:
    examples: Sequence[Example]  # a CompactExamples: index or slice it to get Example objects
    path: str
    format: str                 # text | wic | conllu
    columns: list[str]          # names of the source columns carried in Example.columns
    fingerprint: str            # blake2b of the source files' bytes (and reader options)
    reader_version: int = 1     # bumped when a reader returns something else for the same bytes

    def __post_init__(self):
        if not isinstance(self.examples, CompactExamples):
            object.__setattr__(self, "examples", CompactExamples(self.examples))
