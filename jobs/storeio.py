"""Opening a store: a path/URL goes through `pipeline.store.open_store` (imported lazily); any object
with the store read interface (manifest, layers, tokens, examples, layer(), static_embeddings())
is used as is."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipeline.errors import LayerprobeError


def resolve_store(store: Any, allow_incomplete: bool = False):
    if isinstance(store, (str, os.PathLike)):
        from pipeline.store import open_store  # lazy: the store module may not import torch etc.

        return open_store(os.fspath(store), allow_incomplete=allow_incomplete)
    for attr in ("manifest", "layers", "tokens", "examples", "layer"):
        if not hasattr(store, attr):
            raise TypeError(f"not a store: {type(store).__name__} has no {attr!r}")
    return store


def store_location(store: Any, opened: Any) -> str | None:
    """What to record as the store path in results."""
    if isinstance(store, (str, os.PathLike)):
        return os.fspath(store)
    for attr in ("path", "url", "location"):
        val = getattr(opened, attr, None)
        if val is not None:
            return str(val)
    return None


def model_info(s) -> tuple[str, str]:
    man = s.manifest or {}
    model = man.get("model") or {}
    name = model.get("name", "?") if isinstance(model, dict) else getattr(model, "name", "?")
    return str(name), str(man.get("variant", "?"))


def source_format(s) -> str | None:
    src = (s.manifest or {}).get("source") or {}
    return src.get("format") if isinstance(src, dict) else getattr(src, "format", None)


def column(table, name: str) -> np.ndarray:
    """A non-list pyarrow column as numpy (nulls become None in an object array)."""
    col = table.column(name)
    if col.null_count:
        return np.array(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


def require_columns(table, names, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise LayerprobeError(
            f"{what}: the store's examples table has no column {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(table.column_names)}"
        )


def read_layer(s, layer, rows: np.ndarray) -> np.ndarray:
    """float32 [len(rows), d] of one layer (an int) or of the static table ('static': needs token ids)."""
    x = s.layer(layer, rows)
    return np.asarray(x, dtype=np.float32)


def static_rows(s, token_ids: np.ndarray) -> np.ndarray:
    """float32 [len(token_ids), d]: input-embedding rows, one lookup per distinct id."""
    if not hasattr(s, "static_embeddings"):
        raise LayerprobeError("this store has no static embedding table")
    uniq, inv = np.unique(np.asarray(token_ids, dtype=np.int64), return_inverse=True)
    table = np.asarray(s.static_embeddings(uniq), dtype=np.float32)
    return table[inv]
