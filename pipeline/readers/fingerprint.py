"""Content fingerprints of a source: blake2b over its files' bytes (in a fixed order) and the
reader options, so a store built from it can tell when the data or the way it was read changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import LayerprobeError

_VERSION = b"layerprobe-source-fingerprint-v1"
_CHUNK = 1 << 20


def _frame(h: "hashlib._Hash", data: bytes) -> None:
    """Length-prefixed update, so (a, bc) and (ab, c) never hash alike."""
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def source_fingerprint(files: Sequence[Path], root: Path, options: Mapping[str, Any]) -> str:
    """Hash `files` in the order given, each under its path relative to `root` (its own name when
    `root` is the file itself), then `options` as canonical JSON. Returns 32 hex characters."""
    h = hashlib.blake2b(digest_size=16)
    _frame(h, _VERSION)
    for f in files:
        f = Path(f)
        try:
            name = f.name if f == root else f.relative_to(root).as_posix()
        except ValueError:
            name = f.name
        _frame(h, name.encode("utf-8"))
        try:
            size = f.stat().st_size
            h.update(size.to_bytes(8, "little"))
            with f.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
        except OSError as e:
            raise LayerprobeError(f"cannot read {f}: {e.strerror or e}; check the file exists and is readable") from e
    _frame(h, json.dumps(dict(options), sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()
