"""What every reader produces: a list of `Example`s plus a description of the source."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Source:
    examples: list[Example]
    path: str
    format: str                 # text | wic | conllu
    columns: list[str]          # names of the source columns carried in Example.columns
    fingerprint: str            # blake2b of the source files' bytes (and reader options)
