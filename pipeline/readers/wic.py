"""WiC (Word-in-Context), original distribution format.

`X.data.txt`: `lemma<TAB>POS<TAB>i-j<TAB>sentence1<TAB>sentence2`, i and j the target word's index
in each sentence's space-separated tokens; `X.gold.txt`: one `T`/`F` per data line (may be absent
for an unlabelled test split). Each pair becomes two Examples, side 0 then side 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.errors import LayerprobeError
from pipeline.readers._common import check_limit, file_lines, is_whole_number, read_text_file, spans_of_joined
from pipeline.readers.base import CompactExamples, Example, Source
from pipeline.readers.fingerprint import source_fingerprint

SPLIT_ORDER = ("train", "dev", "test")
DATA_SUFFIX = ".data.txt"
GOLD_SUFFIX = ".gold.txt"
COLUMNS = ["pair_id", "side", "label", "split", "lemma", "pos"]

log = logging.getLogger(__name__)


def _split_name(data_file: Path) -> str:
    return data_file.name[: -len(DATA_SUFFIX)]


def _gold_file(data_file: Path) -> Path:
    return data_file.with_name(_split_name(data_file) + GOLD_SUFFIX)


def _data_files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*" + DATA_SUFFIX) if p.is_file())


def find_wic_files(path: Path) -> list[tuple[str, Path]]:
    """(split, data file) pairs, ordered train, dev, test, then any other split by name.

    `path` is a `*.data.txt` file, a split directory holding `*.data.txt` files, or a directory
    with train/dev/test subdirectories (any subset) holding them."""
    if path.is_file():
        if not path.name.endswith(DATA_SUFFIX):
            raise LayerprobeError(
                f"{path} is not a WiC data file: expected a name ending in {DATA_SUFFIX} "
                "(or pass the directory that holds train/dev/test)"
            )
        return [(_split_name(path), path)]
    if not path.is_dir():
        raise LayerprobeError(f"WiC source {path} does not exist; pass a directory or a *{DATA_SUFFIX} file")
    found: list[tuple[str, Path]] = []
    for sub in SPLIT_ORDER:
        d = path / sub
        if d.is_dir():
            for f in _data_files_in(d):
                # train/train.data.txt is split "train"; anything else keeps its own stem.
                found.append((sub if _split_name(f) == sub or len(_data_files_in(d)) == 1 else _split_name(f), f))
    for f in _data_files_in(path):
        found.append((_split_name(f), f))
    if not found:
        raise LayerprobeError(
            f"no WiC data in {path}: expected *{DATA_SUFFIX} files in it or in its train/, dev/ or test/ subdirectories"
        )
    names = [s for s, _ in found]
    dup = sorted({s for s in names if names.count(s) > 1})
    if dup:
        raise LayerprobeError(
            f"WiC source {path} has more than one data file for split(s) {', '.join(dup)}: "
            f"{', '.join(str(f) for s, f in found if s in dup)}; keep one file per split"
        )
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    found.sort(key=lambda sf: (rank.get(sf[0], len(SPLIT_ORDER)), sf[0]))
    return found


def _side(data_file: Path, line_no: int, sentence: str, index: int, which: str) -> tuple:
    if sentence == "":
        raise LayerprobeError(f"{data_file} line {line_no}: {which} sentence is empty; every WiC pair needs two sentences")
    words = tuple(sentence.split(" "))
    if not 0 <= index < len(words):
        raise LayerprobeError(
            f"{data_file} line {line_no}: target index {index} is out of range for the {which} sentence, "
            f"which has {len(words)} space-separated words (valid 0..{len(words) - 1}); fix the i-j field"
        )
    spans = spans_of_joined(words)
    if not words[index].strip():  # "" from two spaces in a row, or a no-break space: no token to mark
        raise LayerprobeError(
            f"{data_file} line {line_no}: target index {index} points at an empty or whitespace token in the "
            f"{which} sentence (two spaces in a row?); fix the sentence or the index"
        )
    return words, spans


def _read_split(split: str, data_file: Path, out: CompactExamples) -> None:
    lines = file_lines(read_text_file(data_file))
    gold_file = _gold_file(data_file)
    labels: list[bool | None]
    if gold_file.is_file():
        gold = file_lines(read_text_file(gold_file))
        if len(gold) != len(lines):
            raise LayerprobeError(
                f"{gold_file} has {len(gold)} lines but {data_file} has {len(lines)}; "
                "the gold file needs exactly one T/F line per data line"
            )
        labels = []
        for n, g in enumerate(gold, 1):
            g = g.strip()
            if g not in ("T", "F"):
                raise LayerprobeError(f"{gold_file} line {n}: expected T or F, got {g!r}")
            labels.append(g == "T")
    else:
        # An unlabelled split (WiC's test set) is legitimate, a misplaced gold file is not: say so
        # now rather than when a probe finds no labels.
        log.warning("WiC split %r: no %s beside %s; its pairs are stored without labels",
                    split, gold_file.name, data_file.name)
        labels = [None] * len(lines)

    for n, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 5:
            raise LayerprobeError(
                f"{data_file} line {n}: expected 5 tab-separated fields "
                f"(lemma, POS, i-j, sentence1, sentence2), found {len(fields)}"
            )
        lemma, pos, idx, s1, s2 = fields
        parts = idx.split("-")
        if len(parts) != 2 or not all(is_whole_number(p) for p in parts):
            raise LayerprobeError(
                f"{data_file} line {n}: the index field must look like 3-7 (target word index in each sentence), got {idx!r}"
            )
        i, j = int(parts[0]), int(parts[1])
        pair_id = f"{split}-{n - 1:05d}"
        for side, (sentence, index, which) in enumerate(((s1, i, "first"), (s2, j, "second"))):
            words, spans = _side(data_file, n, sentence, index, which)
            out.append(
                Example(
                    text=sentence,
                    words=words,
                    word_spans=spans,
                    target_span=spans[index],
                    target_word_id=index,
                    columns={
                        "pair_id": pair_id,
                        "side": side,
                        "label": labels[n - 1],
                        "split": split,
                        "lemma": lemma,
                        "pos": pos,
                    },
                )
            )


def read_wic(path: str | Path, limit: int | None = None, options: dict | None = None) -> Source:
    """Read a WiC directory or `*.data.txt` file. `limit` counts examples, rounded up to whole pairs."""
    check_limit(limit)
    root = Path(path)
    files = find_wic_files(root)
    examples = CompactExamples()  # packed as built: the objects never all exist at once
    hashed: list[Path] = []
    for split, data_file in files:
        _read_split(split, data_file, examples)
        hashed.append(data_file)
        if _gold_file(data_file).is_file():
            hashed.append(_gold_file(data_file))
    if not examples:
        raise LayerprobeError(f"WiC source {root} has no pairs: its data files are empty")
    if limit is not None:
        examples = examples.part(0, limit + (limit % 2))
    opts = {"format": "wic", "limit": limit, **(options or {})}
    return Source(
        examples=examples,
        path=str(path),
        format="wic",
        columns=examples.column_names,
        fingerprint=source_fingerprint(hashed, root, opts),
    )
