"""Plain-text sources: `.jsonl` / `.json`, `.csv`, `.parquet`, read with the `datasets` library.

One Example per row. The text comes from `text_column`, or, with `words_column` (a list-of-strings
column), from the words joined by single spaces. Optional integer columns `target_start` /
`target_end` give a character span [start, end) into the text: the example's target.

With a words column, the text the model reads is the joined words, so target offsets index the
joined words. A text column the source also has is kept as the column original_text (as the CoNLL-U
reader keeps its `# text` line); a row with a target whose text differs from its joined words is
refused, since nobody can tell which of the two texts its offsets index.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.errors import LayerprobeError
from pipeline.readers._common import check_limit, spans_of_joined, word_containing
from pipeline.readers.base import CompactExamples, Example, Source
from pipeline.readers.fingerprint import source_fingerprint

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_WORD_RE = re.compile(r"\S+")
_PARQUET_BATCH_ROWS = 10_000
ORIGINAL_TEXT = "original_text"  # the text column, when a words column gives the text (conllu's name)
_SHOWN_CHARS = 60

# In the source fingerprint of a source read with a words column beside its text column, so a store
# is never resumed across a change in what the reader returns for the same bytes. 2: that text
# column is kept as original_text instead of dropped.
READER_VERSION = 2


def _load(path: Path):
    """The file as an in-memory `datasets.Dataset`; nothing is left in any cache."""
    import datasets  # lazy: heavy import, only text sources need it

    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise LayerprobeError(
            f"{path}: unsupported text file type {path.suffix!r}; use .jsonl, .json, .csv or .parquet"
        )
    if path.stat().st_size == 0:
        raise LayerprobeError(f"{path} is empty; a text source needs at least one example")
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    # datasets logs a parse error itself (twice: its own handler, then ours) before raising; the
    # one line below says it, with the root cause.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    # datasets otherwise sizes Parquet batches by the first row group, so a 0-row file (or one whose
    # first row group is empty) fails as "BatchSize must be greater than 0" instead of reading as
    # what it is; with a fixed size a 0-row file is "no rows" below, as for an empty .jsonl or .csv.
    extra = {"batch_size": _PARQUET_BATCH_ROWS} if builder == "parquet" else {}
    try:
        with tempfile.TemporaryDirectory(prefix="layerprobe-datasets-") as cache:
            return datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **extra
            )
    except LayerprobeError:
        raise
    except Exception as e:  # datasets/pyarrow/pandas raise many types for a bad file
        if "corresponds to no data" in str(e):
            raise LayerprobeError(f"{path} has no rows; a text source needs at least one example") from e
        root = e
        while root.__cause__ is not None:  # "An error occurred while generating the dataset" hides why
            root = root.__cause__
        detail = " ".join(str(root).split())[:300] or type(root).__name__
        hint = {
            "json": "JSON Lines (one object per line) or a JSON list of objects",
            "csv": "CSV with a header row",
            "parquet": "a Parquet file",
        }[builder]
        raise LayerprobeError(f"cannot read {path} as {builder} ({detail}); check it is {hint}") from e
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not was_disabled:
            datasets.utils.enable_progress_bars()


def _as_offset(value: Any, path: Path, row: int, name: str) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise LayerprobeError(
            f"{path} row {row}: {name} must be a whole-number character offset, got {value!r}"
        )
    return int(value)


def _shortened(value: Any) -> str:
    """`value` as repr, cut to about _SHOWN_CHARS characters, for an error message."""
    shown = repr(value)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."


def read_text(
    path: str | Path,
    text_column: str = "text",
    words_column: str | None = None,
    limit: int | None = None,
) -> Source:
    """Read a `.jsonl`/`.json`/`.csv`/`.parquet` file. Row numbers in errors count from 0."""
    check_limit(limit)
    p = Path(path)
    if not p.is_file():
        raise LayerprobeError(
            f"text source {p} does not exist" if not p.exists() else f"text source {p} is not a file"
        )
    ds = _load(p)
    available = list(ds.column_names)
    needed = words_column if words_column is not None else text_column
    if needed not in available:
        kind = "words column" if words_column is not None else "text column"
        flag = "--words-column" if words_column is not None else "--text-column"
        raise LayerprobeError(
            f"{p} has no {kind} {needed!r}; available columns: {', '.join(available) or '(none)'}; "
            f"pass the right one with {flag}"
        )
    # With a words column, the text column (if the source has one) is not the text: keep it under
    # its own name rather than drop it.
    keeps_original = words_column is not None and text_column != words_column and text_column in available
    if keeps_original and ORIGINAL_TEXT in available and text_column != ORIGINAL_TEXT:
        raise LayerprobeError(
            f"{p} has a column {ORIGINAL_TEXT!r} besides the text column {text_column!r}; with a words "
            f"column the text column is kept as {ORIGINAL_TEXT!r}: rename one of them"
        )
    has_start, has_end = "target_start" in available, "target_end" in available
    if has_start != has_end:
        missing = "target_end" if has_start else "target_start"
        raise LayerprobeError(f"{p} has a target span column but no {missing!r}; give both target_start and target_end, or neither")
    if len(ds) == 0:
        raise LayerprobeError(f"{p} has no rows; a text source needs at least one example")
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))

    examples = CompactExamples()  # packed as built: the objects never all exist at once
    for row, record in enumerate(ds):
        if words_column is not None:
            words = record[words_column]
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise LayerprobeError(
                    f"{p} row {row}: words column {words_column!r} must be a list of strings, got {type(words).__name__}"
                )
            if not words:
                raise LayerprobeError(f"{p} row {row}: words column {words_column!r} is an empty list; every example needs words")
            for k, w in enumerate(words):
                if not w.strip():
                    raise LayerprobeError(
                        f"{p} row {row}: word {k} in column {words_column!r} is empty or whitespace; remove it"
                    )
            words_t = tuple(words)
            text = " ".join(words_t)
            spans = spans_of_joined(words_t)
            original = record[text_column] if keeps_original else None
        else:
            text = record[text_column]
            if text is None or (isinstance(text, str) and not text.strip()):
                raise LayerprobeError(
                    f"{p} row {row}: text column {text_column!r} is empty; remove the row or fill in its text"
                )
            if not isinstance(text, str):
                raise LayerprobeError(
                    f"{p} row {row}: text column {text_column!r} must hold strings, got {type(text).__name__}"
                )
            original = None
            matches = list(_WORD_RE.finditer(text))
            words_t = tuple(m.group() for m in matches)
            spans = tuple(m.span() for m in matches)

        target_span = target_word_id = None
        if has_start:
            start = _as_offset(record["target_start"], p, row, "target_start")
            end = _as_offset(record["target_end"], p, row, "target_end")
            if (start is None) != (end is None):
                raise LayerprobeError(f"{p} row {row}: target_start and target_end must both be set or both be empty")
            if start is not None:
                if original is not None and original != text:
                    raise LayerprobeError(
                        f"{p} row {row}: target_start/target_end are ambiguous: with words column "
                        f"{words_column!r} they index the words joined by single spaces "
                        f"({_shortened(text)}), but text column {text_column!r} holds another text "
                        f"({_shortened(original)}); give offsets into the joined words and make "
                        f"{text_column!r} equal to them (or remove it), or drop --words-column so the "
                        f"offsets index {text_column!r}"
                    )
                if start < 0 or end > len(text) or start > len(text):
                    raise LayerprobeError(
                        f"{p} row {row}: target span [{start}, {end}) is outside the text, which has "
                        f"{len(text)} characters (end is exclusive); fix target_start/target_end"
                    )
                if end <= start:
                    raise LayerprobeError(
                        f"{p} row {row}: target span [{start}, {end}) is empty; target_end must be greater than target_start"
                    )
                if not text[start:end].strip():
                    # No token covers only whitespace: the target would silently match nothing.
                    raise LayerprobeError(
                        f"{p} row {row}: target span [{start}, {end}) covers only whitespace "
                        f"({text[start:end]!r}); point target_start/target_end at the target word"
                    )
                target_span = (start, end)
                target_word_id = word_containing(spans, start, end)

        if keeps_original:
            columns = {(ORIGINAL_TEXT if k == text_column else k): v for k, v in record.items()}
        else:
            columns = {k: v for k, v in record.items() if k != text_column}
        examples.append(
            Example(
                text=text,
                words=words_t,
                word_spans=spans,
                target_span=target_span,
                target_word_id=target_word_id,
                columns=columns,
            )
        )

    opts = {"format": "text", "text_column": text_column, "words_column": words_column, "limit": limit}
    if keeps_original:  # only these sources read differently from version 1: the rest keep their stores
        opts["reader_version"] = READER_VERSION
        names = [ORIGINAL_TEXT if c == text_column else c for c in available]
    else:
        names = [c for c in available if c != text_column]
    return Source(
        examples=examples,
        path=str(path),
        format="text",
        columns=names,
        fingerprint=source_fingerprint([p], p, opts),
        reader_version=READER_VERSION if keeps_original else 1,
    )
