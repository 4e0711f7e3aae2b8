"""Arrow schemas of the tables in a store. The examples table also carries every column of the
source, so only its fixed columns are listed here; `SourceColumnTypes` gives those columns one
type for the whole source."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pyarrow as pa

TOKENS_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.int64(), nullable=False),   # index of the example in the source
        pa.field("position", pa.int32(), nullable=False),     # index in the model input (input_ids)
        pa.field("row", pa.int64(), nullable=False),          # row of hidden_states holding this token
        pa.field("token_id", pa.int64(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("char_start", pa.int32(), nullable=False),   # offsets into examples.input_text
        pa.field("char_end", pa.int32(), nullable=False),
        pa.field("word_id", pa.int32(), nullable=False),      # index into examples.words, -1 if none
        pa.field("special", pa.bool_(), nullable=False),      # added by the tokenizer (CLS, BOS, ...)
        pa.field("is_target", pa.bool_(), nullable=False),    # inside the variant's target span
    ]
)

# Fixed columns of the examples table; source columns follow (lists stay lists).
EXAMPLE_FIXED_FIELDS = [
    pa.field("example_id", pa.int64(), nullable=False),
    pa.field("shard_id", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),            # the source text
    pa.field("input_text", pa.string(), nullable=False),      # what the model saw (variant applied)
    pa.field("words", pa.list_(pa.string()), nullable=False),
    pa.field("word_char_start", pa.list_(pa.int32()), nullable=False),  # offsets into input_text
    pa.field("word_char_end", pa.list_(pa.int32()), nullable=False),
    pa.field("target_char_start", pa.int32(), nullable=True),  # into text; null if no target
    pa.field("target_char_end", pa.int32(), nullable=True),
    pa.field("target_word_id", pa.int32(), nullable=True),
    pa.field("n_tokens", pa.int32(), nullable=False),         # model input length after truncation
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("target_found", pa.bool_(), nullable=False),     # false if truncation cut the target
]
EXAMPLE_FIXED_COLUMNS = [f.name for f in EXAMPLE_FIXED_FIELDS]

# A source column whose values mix kinds Arrow cannot unify (1 and "one") is stored as this: text,
# each value as written in JSON (a string as itself), None as null.
JSON_TEXT = "json-text"


class SourceColumnTypes:
    """{name: Arrow type, or JSON_TEXT} over every example's source columns, so every shard's
    examples table has one schema (a shard of ints beside a shard of strings could be written, but
    no reader could concatenate them). Fed a block of examples' columns at a time (`add`) by the
    pass that already decodes them, and unified: ints with floats become floats, nulls take the
    others' type."""

    def __init__(self, names: Iterable[str]):
        self.types: dict = {n: pa.null() for n in names}

    @property
    def mixed(self) -> list[str]:
        """The columns stored as JSON text."""
        return [n for n, t in self.types.items() if isinstance(t, str)]

    def add(self, rows: list[dict]) -> None:
        for n, known in self.types.items():
            if isinstance(known, str):  # JSON_TEXT already
                continue
            try:
                t = pa.array([r.get(n) for r in rows]).type
                self.types[n] = pa.unify_schemas([pa.schema([(n, known)]), pa.schema([(n, t)])],
                                                 promote_options="permissive").field(n).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError):
                self.types[n] = JSON_TEXT


def source_column(values: list, kind) -> pa.Array:
    """A source column's values as `kind` (from SourceColumnTypes)."""
    if kind == JSON_TEXT:
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values],
                        type=pa.string())
    return pa.array(values, type=kind)
