"""Pooling token rows into groups (words, WiC targets) by mean, as one sparse matrix product per
layer so every probe reads a layer once: `X_groups = pool @ s.layer(L, rows)`."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from jobs.storeio import read_layer, static_rows


def mean_pool_matrix(group_of_row: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """[n_groups, n_rows] matrix whose product with row vectors gives each group's mean."""
    group_of_row = np.asarray(group_of_row, dtype=np.int64)
    counts = np.bincount(group_of_row, minlength=n_groups).astype(np.float32)
    # float32 weights: a float64 matrix would upcast every layer's product (14x slower on WiC).
    weights = np.float32(1.0) / counts[group_of_row]
    n = len(group_of_row)
    return sp.csr_matrix((weights, (group_of_row, np.arange(n))), shape=(n_groups, n))


@dataclass
class Pooling:
    """Groups of token rows keyed by (example_id, key); `rows` index s.tokens (ascending)."""

    example_id: np.ndarray   # [n_groups] int64, groups sorted by (example_id, key)
    key: np.ndarray          # [n_groups] int64 (word_id, or 0 for WiC targets)
    rows: np.ndarray         # [n_rows] int64 indices into s.tokens
    token_ids: np.ndarray    # [n_rows] int64
    pool: sp.csr_matrix      # [n_groups, n_rows]

    @property
    def n_groups(self) -> int:
        return len(self.example_id)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.pool @ np.asarray(x, dtype=np.float32), dtype=np.float32)

    def layer(self, s, layer) -> np.ndarray:
        """Group means of one layer, or of the static embedding table for layer == 'static'."""
        if len(self.rows) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        if layer == "static":
            return self.apply(static_rows(s, self.token_ids))
        return self.apply(read_layer(s, layer, self.rows))

    def layers(self, s, layers: list) -> Iterator[tuple[object, np.ndarray]]:
        """(layer, group means) for each layer in turn, reading the next layer in a background thread
        while the caller fits this one. Over HTTP/S3 the reads wait on the network, and the fit hides
        behind them; on local disk the read is decode-bound on both cores and it gains little."""
        layers = list(layers)
        with ThreadPoolExecutor(1, thread_name_prefix="layer-read") as pool:
            ahead = pool.submit(self.layer, s, layers[0]) if layers else None
            for i, layer in enumerate(layers):
                vecs = ahead.result()
                if i + 1 < len(layers):
                    ahead = pool.submit(self.layer, s, layers[i + 1])
                yield layer, vecs

    def lookup(self, example_ids, keys=None) -> np.ndarray:
        """Group index of each (example_id, key); -1 where there is no such group."""
        example_ids = np.asarray(example_ids, dtype=np.int64)
        keys = np.zeros_like(example_ids) if keys is None else np.asarray(keys, dtype=np.int64)
        packed = _pack(self.example_id, self.key)
        q = _pack(example_ids, keys)
        pos = np.searchsorted(packed, q)
        pos_c = np.minimum(pos, max(len(packed) - 1, 0))
        found = (pos < len(packed)) & (packed[pos_c] == q) if len(packed) else np.zeros(len(q), bool)
        return np.where(found, pos_c, -1)


def _pack(example_id: np.ndarray, key: np.ndarray) -> np.ndarray:
    return example_id.astype(np.int64) * (1 << 24) + (key.astype(np.int64) + 1)


def build_pooling(example_id: np.ndarray, key: np.ndarray, token_id: np.ndarray, mask: np.ndarray) -> Pooling:
    """Group the token rows where mask holds by (example_id, key)."""
    rows = np.flatnonzero(mask).astype(np.int64)
    ex = np.asarray(example_id, dtype=np.int64)[rows]
    k = np.asarray(key, dtype=np.int64)[rows]
    packed = _pack(ex, k)
    uniq, inv = np.unique(packed, return_inverse=True)
    first = np.zeros(len(uniq), dtype=np.int64)
    first[inv[::-1]] = np.arange(len(rows))[::-1]
    return Pooling(
        example_id=ex[first] if len(rows) else np.zeros(0, np.int64),
        key=k[first] if len(rows) else np.zeros(0, np.int64),
        rows=rows,
        token_ids=np.asarray(token_id, dtype=np.int64)[rows],
        pool=mean_pool_matrix(inv, len(uniq)),
    )


def word_pooling(tokens, example_ids=None) -> Pooling:
    """Words = mean of the tokens sharing (example_id, word_id), word_id >= 0, for the given
    examples (all when None)."""
    ex = tokens.column("example_id").to_numpy()
    wid = tokens.column("word_id").to_numpy()
    mask = wid >= 0
    if example_ids is not None:
        mask &= np.isin(ex, np.asarray(example_ids, dtype=np.int64))
    return build_pooling(ex, wid, tokens.column("token_id").to_numpy(), mask)


def target_pooling(tokens, example_ids=None) -> Pooling:
    """One group per example: the mean of its is_target tokens."""
    ex = tokens.column("example_id").to_numpy()
    mask = tokens.column("is_target").to_numpy(zero_copy_only=False).astype(bool)
    if example_ids is not None:
        mask &= np.isin(ex, np.asarray(example_ids, dtype=np.int64))
    return build_pooling(ex, np.zeros_like(ex), tokens.column("token_id").to_numpy(), mask)


def target_word_pooling(tokens, examples, example_ids=None) -> Pooling:
    """One group per example: the mean of the tokens of its target word (word_id equal to the
    example's target_word_id), for the given examples (all when None). Examples without a target
    word, or whose word tokens were not kept, get no group."""
    ex = tokens.column("example_id").to_numpy()
    wid = tokens.column("word_id").to_numpy().astype(np.int64)
    if "target_word_id" not in examples.column_names:
        mask = np.zeros(len(ex), dtype=bool)
    else:
        e_ids = examples.column("example_id").to_numpy().astype(np.int64)
        tw = np.array([-1 if v is None else int(v) for v in examples.column("target_word_id").to_pylist()],
                      dtype=np.int64)
        order = np.argsort(e_ids, kind="stable")
        pos = np.clip(np.searchsorted(e_ids[order], ex), 0, max(len(order) - 1, 0))
        known = (e_ids[order][pos] == ex) if len(order) else np.zeros(len(ex), dtype=bool)
        target_of_row = np.where(known, tw[order][pos] if len(order) else -1, -1)
        mask = (wid >= 0) & (wid == target_of_row)
    if example_ids is not None:
        mask &= np.isin(ex, np.asarray(example_ids, dtype=np.int64))
    return build_pooling(ex, np.zeros_like(ex), tokens.column("token_id").to_numpy(), mask)


def pool_example_words(word_example_id: np.ndarray, word_vecs: np.ndarray, example_ids: np.ndarray) -> np.ndarray:
    """Mean of each example's word vectors, [len(example_ids), d] (zeros for an example with none)."""
    order = {int(e): i for i, e in enumerate(example_ids)}
    grp = np.array([order.get(int(e), -1) for e in word_example_id], dtype=np.int64)
    keep = grp >= 0
    m = mean_pool_matrix(grp[keep], len(example_ids))
    return np.asarray(m @ word_vecs[keep], dtype=np.float32)
