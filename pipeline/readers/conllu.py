"""CoNLL-U treebanks (Universal Dependencies): one file or a directory of `*.conllu` files.

One Example per sentence: words are the FORM column of the basic word lines (multiword-token
ranges `1-2` and empty nodes `1.1` are skipped), text is the words joined by single spaces (as
Hewitt & Manning fed PTB tokens: "didn't" is seen as "did n't", SpaceAfter=No is not applied; the
`# text` line is kept as the column original_text). A '_' (not annotated) in UPOS, XPOS, DEPREL or
LEMMA is stored as None.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import LayerprobeError
from pipeline.readers._common import check_limit, is_whole_number, read_text_file, spans_of_joined
from pipeline.readers.base import CompactExamples, Example, Source
from pipeline.readers.fingerprint import source_fingerprint

COLUMNS = ["sent_id", "split", "original_text", "upos", "xpos", "lemmas", "heads", "deprels"]
_SPLIT_RE = re.compile(r"-(train|dev|test)\.conllu$")
# ASCII digits, as for word IDs (see _common.is_whole_number); used with fullmatch.
_MWT_RE = re.compile(r"[0-9]+-[0-9]+")
_EMPTY_RE = re.compile(r"[0-9]+\.[0-9]+")

# In the source fingerprint, so a store is never resumed across a change in what the reader returns
# for the same bytes. 2: '_' (not annotated) in UPOS, XPOS, DEPREL and LEMMA is null, not a label.
READER_VERSION = 2


def split_of(file: Path) -> str:
    m = _SPLIT_RE.search(file.name)
    return m.group(1) if m else file.stem


def find_conllu_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.conllu") if p.is_file())
        if not files:
            raise LayerprobeError(f"no *.conllu files in directory {path}; pass a .conllu file or a directory of them")
        return files
    raise LayerprobeError(f"CoNLL-U source {path} does not exist; pass a .conllu file or a directory of them")


class _Sentence:
    __slots__ = ("sent_id", "text", "forms", "lemmas", "upos", "xpos", "heads", "deprels", "head_lines")

    def __init__(self) -> None:
        self.sent_id: str | None = None
        self.text = ""
        self.forms: list[str] = []
        self.lemmas: list[str | None] = []
        self.upos: list[str | None] = []
        self.xpos: list[str | None] = []
        self.heads: list[int] = []
        self.deprels: list[str | None] = []
        self.head_lines: list[int] = []


def _annotated(value: str) -> str | None:
    return None if value == "_" else value


def _read_file(file: Path, split: str, want: int | None, out: CompactExamples) -> None:
    """Append the examples of `file` to `out`, stopping once `want` sentences are read (None: all)."""
    sent = _Sentence()
    n_sent = 0

    def flush() -> None:
        nonlocal sent, n_sent
        if sent.forms:
            n_sent += 1
            n = len(sent.forms)
            for head, ln in zip(sent.heads, sent.head_lines):
                if head > n:
                    raise LayerprobeError(
                        f"{file} line {ln}: HEAD {head} points past the sentence, which has {n} words; fix the HEAD column"
                    )
            words = tuple(sent.forms)
            out.append(
                Example(
                    text=" ".join(words),
                    words=words,
                    word_spans=spans_of_joined(words),
                    columns={
                        "sent_id": sent.sent_id if sent.sent_id is not None else f"{file.name}:{n_sent}",
                        "split": split,
                        "original_text": sent.text,
                        "upos": sent.upos,
                        "xpos": sent.xpos,
                        "lemmas": sent.lemmas,
                        "heads": sent.heads,
                        "deprels": sent.deprels,
                    },
                )
            )
        sent = _Sentence()

    for line_no, raw in enumerate(read_text_file(file).split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.strip() == "":
            flush()
            if want is not None and n_sent >= want:
                return
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            key, eq, value = body.partition("=")
            if eq:
                key = key.strip()
                if key == "sent_id":
                    sent.sent_id = value.strip()
                elif key == "text":
                    sent.text = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise LayerprobeError(
                f"{file} line {line_no}: expected 10 tab-separated CoNLL-U columns, found {len(cols)}; "
                "check the line uses tabs, not spaces"
            )
        tok_id = cols[0]
        if _MWT_RE.fullmatch(tok_id) or _EMPTY_RE.fullmatch(tok_id):
            continue
        if not is_whole_number(tok_id):
            raise LayerprobeError(f"{file} line {line_no}: ID {tok_id!r} is not a word number (or a range like 1-2, or 1.1)")
        expected = len(sent.forms) + 1
        if int(tok_id) != expected:
            raise LayerprobeError(
                f"{file} line {line_no}: word ID {tok_id} out of sequence, expected {expected}; "
                "sentences must be separated by a blank line and numbered from 1"
            )
        head = cols[6]
        if not is_whole_number(head):
            raise LayerprobeError(
                f"{file} line {line_no}: HEAD {head!r} is not a whole number (0 for the root, else a word ID)"
            )
        form = cols[1]
        sent.forms.append(form)
        # '_' is CoNLL-U for "not annotated": None, so that probes drop the word instead of learning
        # '_' as a class. Only a lemma may really be '_' (the lemma of the token '_').
        sent.lemmas.append(None if cols[2] == "_" and form != "_" else cols[2])
        sent.upos.append(_annotated(cols[3]))
        sent.xpos.append(_annotated(cols[4]))
        sent.heads.append(int(head))
        sent.head_lines.append(line_no)
        sent.deprels.append(_annotated(cols[7]))
    flush()


def read_conllu(path: str | Path, limit: int | None = None, options: dict | None = None) -> Source:
    """Read a `.conllu` file or a directory of them (in name order). `limit`: first N sentences."""
    check_limit(limit)
    root = Path(path)
    files = find_conllu_files(root)
    examples = CompactExamples()  # packed as built: the objects never all exist at once
    for f in files:
        want = None if limit is None else limit - len(examples)
        _read_file(f, split_of(f), want, examples)
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise LayerprobeError(f"CoNLL-U source {root} has no sentences; check it is a CoNLL-U file with word lines")
    opts = {"format": "conllu", "reader_version": READER_VERSION, "limit": limit, **(options or {})}
    return Source(
        examples=examples,
        path=str(path),
        format="conllu",
        columns=examples.column_names,
        fingerprint=source_fingerprint(files, root, opts),
        reader_version=READER_VERSION,
    )
