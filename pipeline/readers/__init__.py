"""Source readers: a text file, a WiC directory or a CoNLL-U treebank in, a `Source` out.

    read_source(path, format="auto", text_column="text", words_column=None, limit=None) -> Source

`format="auto"` picks: a directory with `*.data.txt` files (directly or in train/dev/test) or a
`*.data.txt` file -> "wic"; a `.conllu` file or a directory of them -> "conllu"; a `.jsonl`,
`.json`, `.csv` or `.parquet` file -> "text".
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import LayerprobeError
from pipeline.readers.base import Example, Source

__all__ = ["Example", "Source", "read_source", "detect_format", "FORMATS"]

FORMATS = ("auto", "text", "wic", "conllu")
_TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def detect_format(path: str | os.PathLike[str]) -> str:
    """"wic", "conllu" or "text" for `path`, or a LayerprobeError saying why none fits."""
    p = Path(path)
    if not p.exists():
        raise LayerprobeError(f"source {p} does not exist; check the path")
    if p.is_dir():
        if any(p.glob("*.data.txt")) or any(
            (p / s).is_dir() and any((p / s).glob("*.data.txt")) for s in ("train", "dev", "test")
        ):
            return "wic"
        if any(p.glob("*.conllu")):
            return "conllu"
        raise LayerprobeError(
            f"cannot tell the format of directory {p}: it holds no *.data.txt (WiC, also looked in "
            "train/, dev/, test/) and no *.conllu files; pass a file or --format"
        )
    name = p.name.lower()
    if name.endswith(".data.txt"):
        return "wic"
    if name.endswith(".conllu"):
        return "conllu"
    if name.endswith(_TEXT_SUFFIXES):
        return "text"
    raise LayerprobeError(
        f"cannot tell the format of {p} from its name: expected .jsonl, .json, .csv, .parquet (text), "
        ".conllu (CoNLL-U) or a WiC directory / *.data.txt; rename it or pass --format text|wic|conllu"
    )


def read_source(
    path: str | os.PathLike[str],
    format: str = "auto",
    text_column: str = "text",
    words_column: str | None = None,
    limit: int | None = None,
) -> Source:
    """Read every example of `path`. `limit` keeps the first N examples (WiC: rounded up to whole
    pairs). Raises LayerprobeError for anything the user can fix."""
    if format not in FORMATS:
        raise LayerprobeError(f"unknown source format {format!r}; use one of: {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "text":
        from pipeline.readers.text import read_text

        return read_text(path, text_column=text_column, words_column=words_column, limit=limit)
    if words_column is not None:
        raise LayerprobeError(
            f"a words column only applies to text sources (.jsonl/.json/.csv/.parquet); {path} is {fmt}, "
            "whose words are already given: drop --words-column"
        )
    opts = {"text_column": text_column, "words_column": words_column}
    if fmt == "wic":
        from pipeline.readers.wic import read_wic

        return read_wic(path, limit=limit, options=opts)
    from pipeline.readers.conllu import read_conllu

    return read_conllu(path, limit=limit, options=opts)
