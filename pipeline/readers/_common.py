"""Small helpers shared by the readers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import LayerprobeError

# ASCII digits only: str.isdigit() also accepts '²' (int() then raises) and int() also reads '١'
# (Arabic-Indic one) as 1, so neither may decide what a file's numbers are.
_WHOLE_NUMBER_RE = re.compile(r"[0-9]+")


def is_whole_number(s: str) -> bool:
    """Whether `s` is a non-empty run of ASCII digits 0-9, safe to pass to int()."""
    return _WHOLE_NUMBER_RE.fullmatch(s) is not None


def spans_of_joined(words: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Character spans of `words` inside " ".join(words)."""
    spans = []
    pos = 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return tuple(spans)


def word_containing(spans: Sequence[tuple[int, int]], start: int, end: int) -> int | None:
    """Index of the word whose span contains [start, end), or None."""
    for i, (s, e) in enumerate(spans):
        if s <= start and end <= e:
            return i
        if s >= end:
            break
    return None


def read_text_file(path: Path) -> str:
    """A UTF-8 text file (a leading BOM is dropped), with a clear error when it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LayerprobeError(
            f"{path} is not valid UTF-8 (byte {e.start}); re-save it as UTF-8"
        ) from e
    except OSError as e:
        raise LayerprobeError(f"cannot read {path}: {e.strerror or e}; check the file exists and is readable") from e


def file_lines(text: str) -> list[str]:
    """Lines without their line endings; trailing empty lines are dropped."""
    lines = text.split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LayerprobeError(f"limit must be a positive whole number of examples, got {limit!r}")
