"""Word-in-Context probe (Pilehvar & Camacho-Collados 2019; the layer-wise protocol of
'Fantastic Semantics', arXiv 2403.01509).

Per layer: target vector of each side (mean of its is_target tokens), optional anisotropy removal
(z-scoring), cosine similarity of the two sides (rounded to 1e-9, so that float-rounding noise
ties), a threshold chosen on the fit split, accuracy on each eval split with a 95% interval (binomial
normal approximation over the eval pairs), against the eval split's majority-class baseline. A row
whose target vectors are identical for every pair is flagged `constant` (a constant predictor).

The static row uses input-embedding rows: of the is_target tokens (base, repeat), or, in the prompt
variant, of the target word's own tokens in the sentence (word_id == target_word_id), because the
prompt's target token is the template's final '"', the same token in every example. A prompt store
extracted with --keep targets lacks those tokens: the static row is then left out and the JSON says
why. Eval selections sharing pairs with the fit selection are refused (jobs.splits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.checks import check_seed, is_finite_number
from jobs.results import Series, prepare_out_dir, write_results
from jobs.splits import default_evals, parse_selector_list, select_fit_eval, split_names
from jobs.storeio import model_info, require_columns, resolve_store, source_format, store_location
from jobs.words import Pooling, target_pooling, target_word_pooling
from jobs.zscore import fit_zscore
from pipeline.errors import LayerprobeError

STANDARDIZE_MODES = ("global", "batch", "none")
BATCH_PAIRS = 30
# Similarities are compared rounded to this many decimals (see tied). The vectors are float32, ~1e-7
# relative precision, so cosines closer than 1e-9 are not told apart by the data: nothing real is lost.
SIM_DECIMALS = 9
# Finest --threshold-grid step: 2 / 1e-6 = 2 million candidate thresholds (~50 MB of index arrays per
# layer); a finer step only splits cosines the default (observed midpoints) already separates exactly.
MIN_GRID_STEP = 1e-6

# What each column of wic.csv (and of the JSON's results) means, written into the JSON.
COLUMN_GLOSSARY = {
    "layer": "hidden_states index (0 = embedding output), or 'static' for the input-embedding table",
    "split": "the eval selection scored",
    "accuracy": "share of the split's pairs predicted right (same sense iff cosine > threshold); compare "
                "eval_class_balance.majority_baseline, not 0.5",
    "ci95_low": "lower end of accuracy's 95% interval (binomial normal approximation over n_pairs)",
    "ci95_high": "upper end of accuracy's 95% interval",
    "threshold": f"cosine threshold chosen on the fit split (cosines rounded to 1e-{SIM_DECIMALS}, so float-rounding "
                 "differences tie)",
    "fit_accuracy": "accuracy on the fit split at that threshold: in-sample, optimistic by construction, "
                    "not a result",
    "n_pairs": "pairs of the split scored (pairs without their target are left out, see excluded_pairs)",
    "constant": "true when this row's target vectors are identical for every pair: all cosines are equal "
                "and the row predicts one class for every pair (a constant predictor, not a measurement)",
    "one_class": "true when the threshold chosen on the fit split puts every fit pair in one class: no "
                 "cosine threshold beat the fit split's majority class, so the row is (close to) a constant "
                 "predictor whose accuracy is about the eval split's majority share",
}


# ---------------------------------------------------------------- pure math
def check_settings(*, standardize: str = "global", threshold_grid: float | None = None, seed: int = 0) -> None:
    """Refuse settings the probe cannot run, before any work (a job checks them before extracting)."""
    if standardize not in STANDARDIZE_MODES:
        raise LayerprobeError(f"unknown --standardize {standardize!r}: expected {', '.join(STANDARDIZE_MODES)}")
    if threshold_grid is not None:
        g = threshold_grid
        if not is_finite_number(g) or not 0 < g <= 2:
            raise LayerprobeError(f"--threshold-grid must be a step in [{MIN_GRID_STEP:g}, 2], got {g!r}")
        if g < MIN_GRID_STEP:
            raise LayerprobeError(
                f"--threshold-grid {g:g} is too fine: {2 / g:,.0f} thresholds over [-1, 1], all held in memory; "
                f"the step must be at least {MIN_GRID_STEP:g} (2 million thresholds); for the exact best "
                "threshold leave --threshold-grid out (observed midpoints)")
    check_seed(seed)


def global_zscorer(fit_vectors: np.ndarray):
    """x -> (x - mean) / std, with the per-dimension statistics of fit_vectors (computed once)."""
    mu, sd = fit_zscore(np.asarray(fit_vectors))
    return lambda x: (np.asarray(x, dtype=np.float64) - mu) / sd


def batch_slices(n: int, batch_pairs: int = BATCH_PAIRS) -> list[slice]:
    """Consecutive batches of `batch_pairs` pairs; a final batch smaller than half a batch is merged
    into the previous one (a batch of one pair z-scores to zero vectors: no similarity at all)."""
    if batch_pairs < 1:
        raise LayerprobeError(f"batch size must be at least 1 pair, got {batch_pairs}")
    starts = list(range(0, n, batch_pairs))
    if len(starts) > 1 and n - starts[-1] < batch_pairs / 2:
        starts.pop()
    bounds = starts + [n]
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def zscore_batches(a: np.ndarray, b: np.ndarray, batch_pairs: int = BATCH_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """'Fantastic Semantics' anisotropy removal, as its reference code does it (RyanLiut/LLM_LexSem,
    main.py: `cosine_similarity(anisotropy_removal(batch_rep_1), anisotropy_removal(batch_rep_2))`
    over batches of 30 sentences): pairs are cut into consecutive batches of `batch_pairs` (in the
    selection's order), and each SIDE's batch is z-scored separately with the per-dimension mean/std
    of its own `batch_pairs` vectors (side a with side a's statistics, side b with side b's), not
    both sides pooled. Differences from the reference: std with ddof=0 instead of torch's ddof=1
    plus 1e-6 (both sides of a batch share the same size, so the cosine is unchanged up to that
    epsilon), and a final batch smaller than half a batch is merged into the previous one (the
    reference keeps it as is; a one-pair batch would give zero vectors)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out_a, out_b = np.empty_like(a), np.empty_like(b)
    for sl in batch_slices(len(a), batch_pairs):
        for x, out in ((a, out_a), (b, out_b)):
            mu, sd = fit_zscore(x[sl])
            out[sl] = (x[sl] - mu) / sd
    return out_a, out_b


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.sqrt(np.einsum("ij,ij->i", a, a))  # einsum: no squared temporaries (norm() made 2)
    nb = np.sqrt(np.einsum("ij,ij->i", b, b))
    den = np.where((na > 0) & (nb > 0), na * nb, 1.0)
    return np.einsum("ij,ij->i", a, b) / den


def binomial_ci95(acc: float, n: int) -> tuple[float | None, float | None]:
    """95% interval of an accuracy over n independent pairs, normal approximation to the binomial:
    acc +- 1.96 sqrt(acc (1 - acc) / n), clipped to [0, 1]. It covers the sampling of the eval pairs
    given the threshold, not the threshold's own fitting noise."""
    if n <= 0 or acc is None or not np.isfinite(acc):
        return None, None
    half = 1.959964 * float(np.sqrt(acc * (1.0 - acc) / n))
    return max(0.0, acc - half), min(1.0, acc + half)


def tied(sims: np.ndarray) -> np.ndarray:
    """Similarities rounded to SIM_DECIMALS, so that values equal up to float rounding tie. The cosine
    of two identical vectors is 1 only up to float64 rounding (0.9999999999999998, 1.0000000000000002,
    ... by summation order); compared raw, the threshold search put its threshold at 1.0 between them
    and fitted the noise (SmolLM2's prompt static row: fit accuracy 0.67 from rounding alone). 1 and 0
    (identical and zero vectors) lie on the rounding grid, far from a rounding boundary. Used by both
    the threshold search and the eval decision, so the two always compare the same numbers."""
    return np.round(np.asarray(sims, dtype=np.float64), SIM_DECIMALS)


def accuracy_at(sims: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Predict 'same sense' iff similarity > threshold (similarities tied as in best_threshold)."""
    sims = tied(sims)
    if len(sims) == 0:
        return float("nan")
    return float(np.mean((sims > threshold) == np.asarray(labels, dtype=bool)))


def best_threshold(sims: np.ndarray, labels: np.ndarray, grid_step: float | None = None) -> tuple[float, float]:
    """(threshold, fit accuracy) maximising accuracy of `sim > threshold` on (sims, labels).

    Candidates: midpoints between consecutive distinct observed similarities plus one below the
    minimum and one above the maximum; or, with grid_step, the grid -1, -1+step, ..., 1. Similarities
    are first rounded by `tied` (equal up to float rounding = equal). Ties go to the smallest threshold."""
    sims = tied(sims)
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
        check_settings(threshold_grid=grid_step)
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


def class_balance(labels: np.ndarray) -> dict[str, Any]:
    """Pairs, share of same-sense pairs, and the majority-class baseline: the accuracy of predicting
    the split's more frequent class for every pair, the level a layer must beat (WiC splits are not
    always balanced: 0.5 is not chance on a 57/43 split)."""
    y = np.asarray(labels, dtype=bool)
    if len(y) == 0:
        return {"n_pairs": 0, "positive_rate": None, "majority_baseline": None}
    p = float(np.mean(y))
    return {"n_pairs": int(len(y)), "positive_rate": p, "majority_baseline": max(p, 1.0 - p)}


def all_rows_identical(vecs: np.ndarray) -> bool:
    """Whether every row of vecs equals the first, bit for bit (e.g. layer 0 of a prompt store on a
    RoPE decoder: the same '"' token everywhere, no position added at the input). Then every pair has
    the same similarity under any standardisation, and the threshold can only pick one class."""
    vecs = np.asarray(vecs)
    return len(vecs) > 0 and bool(np.all(vecs == vecs[:1]))


def majority_lines(balance: dict[str, dict]) -> list[tuple]:
    """Plot reference lines at each eval split's majority-class baseline: one grey line for a single
    split, else one per split in that split's colour ((y, name, split), see plot_metric)."""
    known = {sel: b["majority_baseline"] for sel, b in balance.items() if b["majority_baseline"] is not None}
    if len(known) == 1:
        (y,) = known.values()
        return [(y, f"majority class ({y:.2f})")]
    return [(y, f"majority class, {sel} ({y:.2f})", sel) for sel, y in known.items()]


def layer_0_note(constant: bool) -> str:
    """The prompt variant's layer-0 note, true of the data at hand: `constant` = the layer-0 target
    vectors were found identical (all_rows_identical), as for RoPE decoders."""
    head = ("prompt variant: the target position is the template's final '\"', the same token in every "
            "example, so layer 0 (embedding output) never sees the target word")
    if constant:
        return (head + "; here its layer-0 vectors are identical for every example (the model adds no "
                "position or token type at its input, e.g. rotary position embeddings): every cosine is "
                "the same, and layer 0 is a constant predictor (column constant)")
    return (head + "; its layer-0 vectors differ only by what the embedding layer adds besides the token "
            "(position, token type): expect the majority-class baseline")


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
    check_settings(standardize=standardize, threshold_grid=threshold_grid, seed=seed)
    split_names(fit)          # a malformed --fit fails here, before any work
    prepare_out_dir(out)
    s = resolve_store(store)
    pairs, pooling = load_pairs(s)
    if eval is None:
        # Default: every labelled split the fit selector does not draw from (WiC's test gold is often
        # withheld). By split name: --fit 'train[:80%]' leaves all of train out of the default.
        labelled = [sp for sp, lab in zip(pairs.split, pairs.label) if lab is not None]
        evals = default_evals(labelled, fit)
        if not evals:
            name = split_names(fit)[0]
            raise LayerprobeError(f"no labelled split that the fit selection {fit!r} leaves out; pass --eval, "
                                  f"e.g. --fit '{name}[:80%]' --eval '{name}[80%:]'")
    else:
        evals = parse_selector_list(eval) if isinstance(eval, str) else list(eval)

    fit_all, evals_all = select_fit_eval(pairs.split, fit, evals, unit="pairs")

    def usable(idx: np.ndarray):
        ok = idx[pairs.valid[idx]]
        return ok, int(len(idx) - len(ok))

    fit_idx, fit_excluded = usable(fit_all)
    if len(fit_idx) == 0:
        raise LayerprobeError(f"fit split {fit!r} has no usable pairs")
    y_fit = _labels_or_error(pairs, fit_idx, fit)
    eval_sets = []
    excluded = {fit: fit_excluded}
    for sel, raw in zip(evals, evals_all):
        idx, n_ex = usable(raw)
        excluded[sel] = n_ex
        eval_sets.append((sel, idx, _labels_or_error(pairs, idx, sel)))

    model, variant = model_info(s)
    notes: dict[str, Any] = {}
    static_src = None      # (pooling, group of side a, group of side b) for the static row
    if static and hasattr(s, "static_embeddings"):
        if variant == "prompt":
            static_src, notes["static"] = _prompt_static_source(s, pairs, fit_idx, [i for _, i, _ in eval_sets])
        else:
            static_src = (pooling, pairs.a_group, pairs.b_group)
            notes["static"] = "mean of the input-embedding rows of the is_target tokens"
    eval_balance = {sel: class_balance(y) for sel, _, y in eval_sets}
    constant_rows: list = []
    one_class_rows: list = []  # constant rows are among them

    def score(layer, vecs, ga, gb) -> None:
        used = np.concatenate([ga[fit_idx], gb[fit_idx], *(g[idx] for _, idx, _ in eval_sets for g in (ga, gb))])
        constant = all_rows_identical(vecs[np.unique(used)])
        if constant:
            constant_rows.append(layer)
        # Global z-scoring: one mean/std per layer, from the fit split's vectors, for every split.
        scale = (global_zscorer(np.concatenate([vecs[ga[fit_idx]], vecs[gb[fit_idx]]]))
                 if standardize == "global" else None)

        def similarities(idx):
            a, b = vecs[ga[idx]], vecs[gb[idx]]
            if standardize == "global":
                a, b = scale(a), scale(b)
            elif standardize == "batch":
                a, b = zscore_batches(a, b)
            return cosine(a, b)

        fit_sims = similarities(fit_idx)
        thr, fit_acc = best_threshold(fit_sims, y_fit, threshold_grid)
        above = tied(fit_sims) > thr
        one_class = bool(above.all() or not above.any())
        if one_class:
            one_class_rows.append(layer)
        for sel, idx, y in eval_sets:
            acc = accuracy_at(similarities(idx), y, thr)
            lo, hi = binomial_ci95(acc, len(idx))
            rows.append({"layer": layer, "split": sel, "accuracy": acc, "ci95_low": lo, "ci95_high": hi,
                         "threshold": thr, "fit_accuracy": fit_acc, "n_pairs": int(len(idx)),
                         "constant": constant, "one_class": one_class})

    rows: list[dict] = []
    if static_src is not None:
        src, ga, gb = static_src
        score("static", src.layer(s, "static"), ga, gb)
    for layer, vecs in pooling.layers(s, list(s.layers) if layers is None else list(layers)):
        score(layer, vecs, pairs.a_group, pairs.b_group)
    if variant == "prompt" and any(r["layer"] == 0 for r in rows):
        notes["layer_0"] = layer_0_note(0 in constant_rows)
    plot_note = "error bars: 95% binomial normal-approximation intervals over the eval pairs"
    if constant_rows:
        names = ", ".join("the static row" if L == "static" else f"layer {L}" for L in constant_rows)
        notes["constant_rows"] = (
            f"{names}: the target vectors are identical for every pair, so every pair gets the same "
            "cosine and the row predicts one class for every pair (the fit split's majority; 'same sense' "
            "on a 50/50 fit split); its accuracy "
            "is that class's share of the eval split, not a measurement of the layer")
        plot_note += f"; hollow at {names}: constant predictor (identical target vectors)"
    one_class_only = [L for L in one_class_rows if L not in constant_rows]
    if one_class_only:
        names = ", ".join("static" if L == "static" else str(L) for L in one_class_only)
        notes["one_class_rows"] = (
            f"{names}: the best threshold on the fit split puts every fit pair in one class (no cosine "
            "threshold beat the fit split's majority class), so these rows predict (nearly) one class")
        plot_note += f"; hollow at {names}: the fit threshold predicts one class"
    if static and static_src is None and "static" in notes and echo:
        print(f"static row: {notes['static']}")
    settings = {"store": store_location(store, s), "fit": fit, "eval": evals, "standardize": standardize,
                "batch_pairs": BATCH_PAIRS if standardize == "batch" else None,
                "batching": (f"consecutive batches of {BATCH_PAIRS} pairs in selection order (a final batch "
                             f"under {BATCH_PAIRS // 2} pairs joins the previous one); each side's batch "
                             "z-scored with its own statistics, as in the reference code")
                if standardize == "batch" else None,
                "threshold_grid": threshold_grid, "similarity_decimals": SIM_DECIMALS, "seed": seed,
                "target_vector": "mean of is_target tokens",
                "decision": f"same sense iff cosine (rounded to 1e-{SIM_DECIMALS}) > threshold (chosen on the "
                            "fit split)",
                "interval": "ci95_low/ci95_high: binomial normal approximation over the eval pairs, "
                            "acc +- 1.96 sqrt(acc (1 - acc) / n_pairs)"}
    write_results(out, "wic", rows, settings,
                  [Series("accuracy", "accuracy", ci=("ci95_low", "ci95_high"))], "accuracy",
                  model, variant,
                  extra={**notes, "n_fit_pairs": int(len(fit_idx)),
                         "fit_positive_rate": class_balance(y_fit)["positive_rate"],
                         "eval_class_balance": eval_balance,
                         "excluded_pairs": excluded,
                         "excluded_pairs_reason": "target_found false (or no target tokens / a side missing)"},
                  echo=echo, title_keys=("fit", "eval", "standardize"), hlines=majority_lines(eval_balance),
                  plot_note=plot_note, column_docs=COLUMN_GLOSSARY, hollow="one_class")
    return rows


def _prompt_static_source(s, pairs: WicPairs, fit_idx: np.ndarray, eval_idx: list[np.ndarray]):
    """((pooling, group a, group b) or None, note) for the prompt variant's static row: the target
    word's own tokens in the sentence (word_id == target_word_id)."""
    used = np.unique(np.concatenate([fit_idx, *eval_idx]))
    wanted = np.concatenate([pairs.a_example[used], pairs.b_example[used]])
    wp = target_word_pooling(s.tokens, s.examples, wanted)
    ga, gb = wp.lookup(pairs.a_example), wp.lookup(pairs.b_example)
    missing = int(np.sum((ga[used] < 0) | (gb[used] < 0)))
    if missing == 0:
        return (wp, ga, gb), ("prompt variant: mean of the input-embedding rows of the target word's own tokens "
                              "in the sentence (word_id == target_word_id); the prompt's target token itself "
                              "(the final '\"') has the same static row in every example")
    keep = (s.manifest or {}).get("keep")
    why = (f"the store was extracted with --keep {keep}, so it lacks the target word's own tokens"
           if keep == "targets" else f"{missing} of the {len(used)} pairs lack tokens of the target word "
           "(word_id == target_word_id)")
    return None, ("not computed: in the prompt variant the target token is the template's final '\"', whose "
                  "static embedding is the same for both sides of every pair (constant cosine, chance accuracy), "
                  f"and the static row needs the target word's own tokens instead; {why}")
