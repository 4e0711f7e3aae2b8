"""Word-in-Context probe (Pilehvar & Camacho-Collados 2019; the layer-wise protocol of
'Fantastic Semantics', arXiv 2403.01509).

Per layer: target vector of each side (mean of its is_target tokens; the static row uses the input
embedding rows of the same tokens), optional anisotropy removal (z-scoring), cosine similarity of
the two sides, a threshold chosen on the fit split, accuracy on each eval split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.results import write_results
from jobs.splits import parse_selector_list, select_units
from jobs.storeio import model_info, require_columns, resolve_store, source_format, store_location
from jobs.words import Pooling, target_pooling
from pipeline.errors import LayerprobeError

STANDARDIZE_MODES = ("global", "batch", "none")
BATCH_PAIRS = 30


# ---------------------------------------------------------------- pure math


def _safe_std(x: np.ndarray, axis=0) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std, accumulated in float64 whatever x's dtype (no float64 copy of x)."""
    mu = x.mean(axis=axis, keepdims=True, dtype=np.float64)
    sd = np.sqrt(np.mean(np.square(x - mu), axis=axis, keepdims=True))
    sd = np.where(sd > 1e-12, sd, 1.0)
    return mu, sd


def global_zscorer(fit_vectors: np.ndarray):
    """x -> (x - mean) / std, with the per-dimension statistics of fit_vectors (computed once)."""
    mu, sd = _safe_std(np.asarray(fit_vectors))
    return lambda x: (np.asarray(x, dtype=np.float64) - mu) / sd


def zscore_batches(a: np.ndarray, b: np.ndarray, batch_pairs: int = BATCH_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """'Fantastic Semantics' standardisation: consecutive batches of `batch_pairs` pairs, each
    standardised with the per-dimension mean/std of its own 2*batch_pairs vectors (both sides)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out_a, out_b = np.empty_like(a), np.empty_like(b)
    for start in range(0, len(a), batch_pairs):
        sl = slice(start, start + batch_pairs)
        mu, sd = _safe_std(np.concatenate([a[sl], b[sl]]))
        out_a[sl] = (a[sl] - mu) / sd
        out_b[sl] = (b[sl] - mu) / sd
    return out_a, out_b


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.sqrt(np.einsum("ij,ij->i", a, a))  # einsum: no squared temporaries (norm() made 2)
    nb = np.sqrt(np.einsum("ij,ij->i", b, b))
    den = np.where((na > 0) & (nb > 0), na * nb, 1.0)
    return np.einsum("ij,ij->i", a, b) / den


def accuracy_at(sims: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Predict 'same sense' iff similarity > threshold."""
    sims = np.asarray(sims, dtype=np.float64)
    if len(sims) == 0:
        return float("nan")
    return float(np.mean((sims > threshold) == np.asarray(labels, dtype=bool)))


def best_threshold(sims: np.ndarray, labels: np.ndarray, grid_step: float | None = None) -> tuple[float, float]:
    """(threshold, fit accuracy) maximising accuracy of `sim > threshold` on (sims, labels).

    Candidates: midpoints between consecutive distinct observed similarities plus one below the
    minimum and one above the maximum; or, with grid_step, the grid -1, -1+step, ..., 1. Ties go to
    the smallest threshold."""
    sims = np.asarray(sims, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if len(sims) == 0:
        raise LayerprobeError("no labelled pairs to choose a threshold on")
    order = np.argsort(sims, kind="stable")
    s, ys = sims[order], y[order]
    n = len(s)
    # predicting positive for sorted indices >= k: correct = negatives below k + positives from k
    neg_below = np.concatenate([[0], np.cumsum(~ys)])
    pos_from = ys.sum() - np.concatenate([[0], np.cumsum(ys)])
    correct = neg_below + pos_from   # index k = 0..n
    if grid_step is not None:
        if not 0 < grid_step <= 2:
            raise LayerprobeError(f"--threshold-grid must lie in (0, 2], got {grid_step}")
        n_steps = int(np.floor(2.0 / grid_step + 1e-9))
        thresholds = np.round(-1.0 + grid_step * np.arange(n_steps + 1), 10)
        ks = np.searchsorted(s, thresholds, side="right")
    else:
        distinct = np.flatnonzero(np.diff(s) > 0) + 1          # boundaries between distinct values
        ks = np.concatenate([[0], distinct, [n]])
        mids = (s[distinct - 1] + s[distinct]) / 2.0
        thresholds = np.concatenate([[s[0] - 1e-6], mids, [s[-1] + 1e-6]])
    acc = correct[ks] / n
    best = int(np.argmax(acc))
    return float(thresholds[best]), float(acc[best])


# ---------------------------------------------------------------- store side


@dataclass
class WicPairs:
    """Pairs in example order: the group index (in the pooling) of each side, label, split."""

    pair_id: list
    split: list
    a_example: np.ndarray
    b_example: np.ndarray
    label: list
    valid: np.ndarray            # both sides found with target tokens
    a_group: np.ndarray = field(default=None)
    b_group: np.ndarray = field(default=None)


def load_pairs(s) -> tuple[WicPairs, Pooling]:
    tokens, examples = s.tokens, s.examples
    has_targets = "is_target" in tokens.column_names and bool(
        np.any(tokens.column("is_target").to_numpy(zero_copy_only=False))
    )
    fmt = source_format(s)
    if not has_targets or (fmt is not None and fmt != "wic") or "pair_id" not in examples.column_names:
        raise LayerprobeError(
            f"store has no WiC targets (source format {fmt!r}; a WiC probe needs a store extracted "
            "from WiC data, with is_target tokens)"
        )
    require_columns(examples, ["pair_id", "side", "label"], "WiC probe")
    ex_ids = examples.column("example_id").to_numpy()
    order = np.argsort(ex_ids, kind="stable")
    pair_col = examples.column("pair_id").to_pylist()
    side_col = examples.column("side").to_pylist()
    label_col = examples.column("label").to_pylist()
    split_col = examples.column("split").to_pylist() if "split" in examples.column_names else [None] * len(ex_ids)
    found_col = (examples.column("target_found").to_pylist() if "target_found" in examples.column_names
                 else [True] * len(ex_ids))

    pairs: dict[Any, dict] = {}
    for i in order:
        p = pairs.setdefault(pair_col[i], {"split": split_col[i], "label": label_col[i], "found": True})
        side = int(side_col[i])
        p[side] = int(ex_ids[i])
        p["found"] = p["found"] and bool(found_col[i])
        if p["label"] is None:
            p["label"] = label_col[i]
    pid = list(pairs)
    a = np.array([pairs[k].get(0, -1) for k in pid], dtype=np.int64)
    b = np.array([pairs[k].get(1, -1) for k in pid], dtype=np.int64)
    found = np.array([pairs[k]["found"] for k in pid], dtype=bool) & (a >= 0) & (b >= 0)
    wanted = np.concatenate([a[found], b[found]])
    pooling = target_pooling(tokens, wanted)
    ga = pooling.lookup(a)
    gb = pooling.lookup(b)
    valid = found & (ga >= 0) & (gb >= 0)
    return WicPairs(pid, [pairs[k]["split"] for k in pid], a, b, [pairs[k]["label"] for k in pid],
                    valid, ga, gb), pooling


def _labels_or_error(pairs: WicPairs, idx: np.ndarray, selector: str) -> np.ndarray:
    labels = [pairs.label[i] for i in idx]
    n_null = sum(l is None for l in labels)
    if n_null:
        raise LayerprobeError(
            f"split {selector!r} has {n_null} unlabelled pair(s) (label is null, e.g. the WiC test "
            "set without its gold file): it cannot be scored; pick a labelled split"
        )
    return np.array([bool(l) for l in labels], dtype=bool)


def run_wic(*, store: Any, out: str | os.PathLike, fit: str = "train", eval: str | list[str] | None = None,
            standardize: str = "global", threshold_grid: float | None = None, seed: int = 0,
            layers: list[int] | None = None, static: bool = True, echo: bool = True) -> list[dict]:
    """WiC accuracy per layer (and for the static embedding table). Returns the result rows."""
    if standardize not in STANDARDIZE_MODES:
        raise LayerprobeError(f"unknown --standardize {standardize!r}: expected {', '.join(STANDARDIZE_MODES)}")
    s = resolve_store(store)
    pairs, pooling = load_pairs(s)
    if eval is None:
        # Default: every other split of the store that has labels (WiC's test gold is often withheld).
        labelled = {sp for sp, lab in zip(pairs.split, pairs.label) if lab is not None}
        evals = [sp for sp in ("train", "dev", "test") if sp in labelled and sp != fit]
        evals += sorted(sp for sp in labelled if sp not in ("train", "dev", "test", fit))
        if not evals:
            raise LayerprobeError(f"no labelled split besides {fit!r} to evaluate on; pass --eval, e.g. "
                                  f"--eval '{fit}[80%:]' with --fit '{fit}[:80%]'")
    else:
        evals = parse_selector_list(eval) if isinstance(eval, str) else list(eval)

    def pick(selector: str):
        idx = select_units(pairs.split, selector)
        ok = idx[pairs.valid[idx]]
        return ok, int(len(idx) - len(ok))

    fit_idx, fit_excluded = pick(fit)
    if len(fit_idx) == 0:
        raise LayerprobeError(f"fit split {fit!r} has no usable pairs")
    y_fit = _labels_or_error(pairs, fit_idx, fit)
    eval_sets = []
    excluded = {fit: fit_excluded}
    for sel in evals:
        idx, n_ex = pick(sel)
        excluded[sel] = n_ex
        eval_sets.append((sel, idx, _labels_or_error(pairs, idx, sel)))

    layer_list = list(s.layers) if layers is None else list(layers)
    todo = (["static"] if static and hasattr(s, "static_embeddings") else []) + layer_list
    rows = []
    for layer, vecs in pooling.layers(s, todo):
        # Global z-scoring: one mean/std per layer, from the fit split's vectors, for every split.
        scale = (global_zscorer(np.concatenate([vecs[pairs.a_group[fit_idx]], vecs[pairs.b_group[fit_idx]]]))
                 if standardize == "global" else None)

        def similarities(idx):
            a, b = vecs[pairs.a_group[idx]], vecs[pairs.b_group[idx]]
            if standardize == "global":
                a, b = scale(a), scale(b)
            elif standardize == "batch":
                a, b = zscore_batches(a, b)
            return cosine(a, b)

        thr, fit_acc = best_threshold(similarities(fit_idx), y_fit, threshold_grid)
        for sel, idx, y in eval_sets:
            rows.append({"layer": layer, "split": sel, "accuracy": accuracy_at(similarities(idx), y, thr),
                         "threshold": thr, "fit_accuracy": fit_acc, "n_pairs": int(len(idx))})
    model, variant = model_info(s)
    settings = {"store": store_location(store, s), "fit": fit, "eval": evals, "standardize": standardize,
                "batch_pairs": BATCH_PAIRS if standardize == "batch" else None,
                "threshold_grid": threshold_grid, "seed": seed,
                "target_vector": "mean of is_target tokens; static: mean of their input-embedding rows",
                "decision": "same sense iff cosine > threshold (chosen on the fit split)"}
    write_results(out, "wic", rows, settings, ["accuracy"], "accuracy", model, variant,
                  extra={"n_fit_pairs": int(len(fit_idx)),
                         "excluded_pairs": excluded,
                         "excluded_pairs_reason": "target_found false (or no target tokens / a side missing)"},
                  echo=echo)
    return rows
