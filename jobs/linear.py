"""Linear (logistic-regression) probes per layer, with Hewitt & Liang (2019) control tasks.

Word-level labels come from list columns with one value per word (`upos`, `deprel` -> the
`deprels` column's universal part, `xpos`, ...); a scalar example column gives example-level
labels, the example's vector being the mean of its word vectors. Features are standardised with
the fit split's statistics; the static embedding table is probed as layer `static`.

Labels must be categorical, checked before any layer is read: numeric columns (head indices,
positions, counts, scores) are refused, and so is a label with fewer than 2 classes or with more
distinct values than half its labelled units in the store (an identifier such as sent_id); a
categorical label whose fit selection is too small to train on (fewer than 2 units per class, or a
single class) is refused as such. Eval selections sharing sentences (examples) with the fit
selection are refused (jobs.splits).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.baselines import majority_accuracy
from jobs.checks import check_seed, is_int
from jobs.results import Series, prepare_out_dir, write_results
from jobs.splits import (check_eval_splits_exist, example_splits, parse_selector_list, refuse_shared_groups,
                         select_fit_eval, split_names)
from jobs.storeio import model_info, resolve_store, store_location
from jobs.words import mean_pool_matrix, word_pooling
from jobs.zscore import fit_zscore
from pipeline.errors import LayerprobeError

ALIASES = {"deprel": "deprels", "lemma": "lemmas", "head": "heads"}
# inverse L2 regularisation strength of the logistic regression (scikit-learn's default; not tuned)
C = 1.0
UNIVERSAL = {"deprels"}
# Fewest labelled units (over the store) on which a label with more distinct values than half its
# units is called an identifier rather than too little data.
MIN_UNITS_TO_TELL = 20


# ---------------------------------------------------------------- pure pieces


def control_labels(types: list[str], fit_labels: list[str], seed: int) -> list[str]:
    """Hewitt & Liang control task: each word type gets a label drawn from the fit split's empirical
    label distribution. The draw for a type depends only on (seed, type), so it is the same in every
    split and run, whatever other types exist."""
    names, counts = np.unique(np.asarray(fit_labels, dtype=object).astype(str), return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    out = []
    for t in types:
        h = hashlib.blake2b(f"{seed}\x00{t}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "little") / 2.0 ** 64
        out.append(str(names[min(int(np.searchsorted(cdf, u, side="right")), len(names) - 1)]))
    return out


def fit_score(X_fit: np.ndarray, y_fit: list[str], evals: list[tuple[np.ndarray, list[str]]], seed: int,
              max_iter: int = 1000) -> list[float]:
    """Standardise with fit statistics, fit multinomial logistic regression (lbfgs), return the
    accuracy on each eval set. Labels never seen in fit are counted wrong."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X_fit = np.asarray(X_fit, dtype=np.float64)
    mu, sd = fit_zscore(X_fit)
    y_fit = np.asarray(y_fit, dtype=object).astype(str)
    classes = np.unique(y_fit)
    if len(classes) == 1:
        predict = lambda X: np.full(len(X), classes[0], dtype=object)  # noqa: E731
    else:
        # C spelled out (scikit-learn's default, with its default L2 penalty): the results record it
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed, solver="lbfgs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit((X_fit - mu) / sd, y_fit)
        predict = lambda X: clf.predict((np.asarray(X, dtype=np.float64) - mu) / sd)  # noqa: E731
    accs = []
    for X, y in evals:
        if len(y) == 0:
            accs.append(float("nan"))
            continue
        accs.append(float(np.mean(predict(X) == np.asarray(y, dtype=object).astype(str))))
    return accs


# ---------------------------------------------------------------- store side


@dataclass
class Items:
    """Labelled items of one split: rows of the group matrix, labels, control-task types."""

    groups: np.ndarray      # word-level: pooling group index; example-level: index into `pool_ids`
    labels: list[str]
    types: list[str]


def _value_type(examples, col: str):
    import pyarrow as pa

    t = examples.schema.field(col).type
    return t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t


def _is_numeric(examples, col: str) -> bool:
    import pyarrow as pa

    t = _value_type(examples, col)
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _resolve_label(examples, label: str) -> tuple[str, bool]:
    """(column, word_level). Refuses numeric columns: they are quantities or pointers, not classes."""
    cols = examples.column_names
    col = label if label in cols else ALIASES.get(label, label)
    if col not in cols:
        import pyarrow as pa

        word_cols = [c for c in cols if pa.types.is_list(examples.schema.field(c).type)
                     and c not in ("words", "word_char_start", "word_char_end") and not _is_numeric(examples, c)]
        skip = {"example_id", "shard_id", "text", "input_text", "target_char_start", "target_char_end",
                "target_word_id", "n_tokens", "truncated", "target_found"}
        ex_cols = [c for c in cols if c not in skip and c not in word_cols
                   and not pa.types.is_list(examples.schema.field(c).type) and not _is_numeric(examples, c)]
        raise LayerprobeError(
            f"unknown label {label!r}; word-level label columns: {', '.join(word_cols) or '(none)'}"
            + (" (also 'deprel')" if "deprels" in word_cols else "")
            + f"; example-level columns: {', '.join(ex_cols) or '(none)'}"
        )
    import pyarrow as pa

    if _is_numeric(examples, col):
        raise LayerprobeError(
            f"label {label!r} (column {col!r}) holds numbers ({_value_type(examples, col)}), not categories: "
            "a linear probe classifies, and head indices, positions, counts or scores are not classes "
            "(a word's head index means nothing outside its sentence); pick a categorical column such as "
            "upos or deprel, or store integer category codes as strings")
    return col, pa.types.is_list(examples.schema.field(col).type)


def check_categorical(label: str, labels: list[str], fit: str, unit: str,
                      store_labels: list[str] | None = None) -> None:
    """Refuse fit labels that cannot be classes: fewer than 2, or more distinct values than half
    the labelled units (an identifier: every unit its own class, nothing to generalise).

    Why fit labels are refused is told from `store_labels` (the label's values over the whole store;
    the fit labels when not given): a label is an identifier when it has more distinct values than
    half its units in the store, with at least MIN_UNITS_TO_TELL of them; a few words of a fit
    selection as small as dev[:1] have mostly distinct values for any label. A label categorical on
    the store is refused as a fit selection too small to train on."""
    n, k = len(labels), len(set(labels))
    if 2 <= k <= n / 2:
        return
    store_labels = labels if store_labels is None else store_labels
    n_all, k_all = len(store_labels), len(set(store_labels))
    store_says = f"the store has {k_all:,} class{'es' if k_all != 1 else ''} over {n_all:,} labelled {unit}"
    name = split_names(fit)[0]
    more = f"select more for the fit, e.g. --fit '{name}[:80%]' --eval '{name}[80%:]'"
    if k_all < 2:
        raise LayerprobeError(f"label {label!r} has {k_all} class{'es' if k_all != 1 else ''} in the store "
                              f"({n_all:,} labelled {unit}): a classifier needs at least 2")
    if k_all > n_all / 2:
        if n_all < MIN_UNITS_TO_TELL:
            raise LayerprobeError(
                f"label {label!r} has {k_all:,} distinct values over only {n_all:,} labelled {unit} in the whole "
                f"store: too few to tell classes from an identifier, or to train on; extract more examples")
        raise LayerprobeError(
            f"label {label!r} is not categorical: {k_all:,} distinct values over {n_all:,} labelled {unit} in the "
            f"store ({k:,} over {n:,} in the fit selection {fit!r}): more than half the {unit} have a value of "
            "their own, like an identifier; pick a label with a few classes, such as upos or deprel")
    if k < 2:  # categorical on the store: the fit selection is too small, or all of one class
        few = f"which has only {n:,} labelled {unit if n != 1 else unit[:-1]}" if n < MIN_UNITS_TO_TELL else \
            f"all {n:,} labelled {unit} of it"
        raise LayerprobeError(
            f"label {label!r} has {k} class{'es' if k != 1 else ''} in the fit selection {fit!r}, {few} "
            f"({store_says}): a classifier needs at least 2; "
            + (more if n < MIN_UNITS_TO_TELL else "pick a fit selection holding several classes"))
    raise LayerprobeError(
        f"the fit selection {fit!r} has only {n:,} labelled {unit} for the {k:,} classes of label {label!r} "
        f"in it (fewer than 2 {unit} per class; {store_says}): too few to train a classifier on; {more}")


def partially_kept_words(tokens, examples) -> set[tuple[int, int]]:
    """(example_id, word_id) of words cut by truncation: the last stored word of a truncated example
    when its tokens end before the word does (the rest of its subwords fell past --max-length). Its
    mean would be a prefix's, not the word's."""
    trunc = examples.column("truncated").to_numpy(zero_copy_only=False).astype(bool)
    if not trunc.any():
        return set()
    word_end = {int(e): ends for e, ends, t in zip(examples.column("example_id").to_pylist(),
                                                   examples.column("word_char_end").to_pylist(), trunc) if t}
    t_ex = tokens.column("example_id").to_numpy()
    rows = np.flatnonzero(np.isin(t_ex, list(word_end)) & (tokens.column("word_id").to_numpy() >= 0))
    last: dict[int, tuple[int, int]] = {}  # example -> (its last stored word, furthest char_end of that word)
    for e, w, end in zip(t_ex[rows].tolist(), tokens.column("word_id").to_numpy()[rows].tolist(),
                         tokens.column("char_end").to_numpy()[rows].tolist()):
        lw, le = last.get(e, (-1, -1))
        if w > lw:
            last[e] = (w, end)
        elif w == lw:
            last[e] = (w, max(le, end))
    return {(e, w) for e, (w, end) in last.items() if end < word_end[e][w]}


def _norm_label(v, col) -> str | None:
    if v is None:
        return None
    v = str(v)
    return v.split(":", 1)[0] if col in UNIVERSAL else v


def labels_in_store(values: list, col: str, word_level: bool) -> list[str]:
    """The label's values over the whole store (every example, every word; nulls left out)."""
    flat = (v for vals in values for v in (vals or [])) if word_level else iter(values)
    return [lab for lab in (_norm_label(v, col) for v in flat) if lab is not None]


def check_settings(*, max_iter: int = 1000, seed: int = 0) -> None:
    """Refuse settings the probe cannot run, before any work (a job checks them before extracting)."""
    if not is_int(max_iter) or max_iter < 1:
        raise LayerprobeError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    check_seed(seed)


COLUMN_GLOSSARY = {
    "layer": "hidden_states index (0 = embedding output), or 'static' for the input embedding table",
    "split": "eval selection the row is scored on",
    "accuracy": "share of eval items whose predicted label is the gold one (labels unseen in fit count wrong)",
    "control_accuracy": "accuracy of the same classifier on the control task (Hewitt & Liang 2019)",
    "selectivity": "accuracy - control_accuracy",
    "majority_accuracy": "accuracy of always answering the fit split's most frequent label (same for every layer)",
    "n_fit": "labelled items (words or examples) the classifier is fitted on",
    "n_eval": "labelled items scored in this eval split",
    "n_classes": "distinct labels in the fit split",
}


def run_linear(*, store: Any, out: str | os.PathLike, label: str, fit: str = "dev", eval: str | list[str] = "test",
               control: bool = False, seed: int = 0, layers: list[int] | None = None, static: bool = True,
               max_iter: int = 1000, echo: bool = True) -> list[dict]:
    """Logistic-regression probe accuracy per layer (and static). Returns the result rows."""
    check_settings(max_iter=max_iter, seed=seed)
    evals = parse_selector_list(eval) if isinstance(eval, str) else list(eval)
    split_names(fit)          # a malformed --fit fails here, before any work
    prepare_out_dir(out)
    s = resolve_store(store)
    ex = s.examples
    col, word_level = _resolve_label(ex, label)
    if control and not word_level:
        # Hewitt & Liang's control gives each word type a fixed random label; an example has no type
        # to key it on (its whole text would be one, unseen in eval: chance, not a control).
        raise LayerprobeError(f"--control is the Hewitt & Liang control task, a random label per word type; "
                              f"label {label!r} is per example, which has no word type: drop --control (the "
                              "majority-label line is the baseline) or probe a word-level label")
    keep_targets = isinstance(s.manifest, dict) and s.manifest.get("keep") == "targets"
    pooling = word_pooling(s.tokens)
    if pooling.n_groups == 0:
        raise LayerprobeError("this store has no word tokens (word_id >= 0), e.g. it kept only targets")
    ex_ids = ex.column("example_id").to_numpy()
    order = np.argsort(ex_ids, kind="stable")
    ex_splits = example_splits(ex)
    splits = [ex_splits[i] for i in order]
    values = ex.column(col).to_pylist()
    words = ex.column("words").to_pylist()
    texts = ex.column("text").to_pylist() if "text" in ex.column_names else [" ".join(w) for w in words]

    # example-level: one pooled vector per example = mean of its word vectors
    word_of_example = pooling.example_id
    ex_pool = None
    if not word_level:
        pos = {int(e): i for i, e in enumerate(ex_ids.tolist())}
        grp = np.array([pos[int(e)] for e in word_of_example], dtype=np.int64)
        ex_pool = mean_pool_matrix(grp, len(ex_ids))
        has_words = np.bincount(grp, minlength=len(ex_ids)) > 0

    unit = "sentences" if word_level else "examples"
    check_eval_splits_exist(splits, fit, evals)
    fit_units, eval_units = select_fit_eval(splits, fit, evals, unit=unit)
    if "pair_id" in ex.column_names:  # a WiC store: its two examples of a pair stay on one side
        pair_of = np.asarray([str(p) for p in ex.column("pair_id").to_pylist()], dtype=object)[order]
        refuse_shared_groups(fit, pair_of[fit_units], [(sel, pair_of[u]) for sel, u in zip(evals, eval_units)],
                             "pairs")
    partial = partially_kept_words(s.tokens, ex) if word_level else set()

    def items(units: np.ndarray) -> tuple[Items, int]:
        chosen = order[units]
        g, y, t, dropped = [], [], [], 0
        for i in chosen.tolist():
            if word_level:
                vals = values[i] or []
                n = len(words[i])
                if len(vals) != n:
                    dropped += n
                    continue
                grp = pooling.lookup(np.full(n, ex_ids[i]), np.arange(n))
                for k in range(n):
                    lab = _norm_label(vals[k], col)
                    if grp[k] < 0 or lab is None or (int(ex_ids[i]), k) in partial:
                        dropped += 1
                        continue
                    g.append(int(grp[k])); y.append(lab); t.append(str(words[i][k]).lower())
            else:
                lab = _norm_label(values[i], col)
                if lab is None or not has_words[i]:
                    dropped += 1
                    continue
                g.append(i); y.append(lab); t.append(str(texts[i]).lower())
        return Items(np.array(g, dtype=np.int64), y, t), dropped

    fit_items, fit_drop = items(fit_units)
    if len(fit_items.labels) == 0:
        raise LayerprobeError(f"fit split {fit!r} has no labelled {'words' if word_level else 'examples'}")
    check_categorical(label, fit_items.labels, fit, "words" if word_level else "examples",
                      store_labels=labels_in_store(values, col, word_level))
    dropped = {fit: fit_drop}
    eval_items = []
    for sel, units in zip(evals, eval_units):
        it, d = items(units)
        dropped[sel] = d
        eval_items.append((sel, it))
    if control:
        ctrl_fit = control_labels(fit_items.types, fit_items.labels, seed)
        ctrl_eval = [control_labels(it.types, fit_items.labels, seed) for _, it in eval_items]

    majority = {sel: majority_accuracy(fit_items.labels, it.labels) for sel, it in eval_items}
    todo = (["static"] if static and hasattr(s, "static_embeddings") else []) + (
        list(s.layers) if layers is None else list(layers))
    rows = []
    for layer, W in pooling.layers(s, todo):
        feats = W if word_level else np.asarray(ex_pool @ W, dtype=np.float32)
        X_fit = feats[fit_items.groups]
        Xs = [feats[it.groups] for _, it in eval_items]
        accs = fit_score(X_fit, fit_items.labels, [(X, it.labels) for X, (_, it) in zip(Xs, eval_items)],
                         seed, max_iter)
        if control:
            caccs = fit_score(X_fit, ctrl_fit, list(zip(Xs, ctrl_eval)), seed, max_iter)
        for k, (sel, it) in enumerate(eval_items):
            row: dict[str, Any] = {"layer": layer, "split": sel, "accuracy": accs[k]}
            if control:
                row["control_accuracy"] = caccs[k]
                row["selectivity"] = accs[k] - caccs[k]
            row["majority_accuracy"] = majority[sel]
            row.update({"n_fit": len(fit_items.labels), "n_eval": len(it.labels),
                        "n_classes": len(set(fit_items.labels))})
            rows.append(row)
    model, variant = model_info(s)
    settings = {"store": store_location(store, s), "label": label, "label_column": col,
                "level": "word" if word_level else "example", "fit": fit, "eval": evals, "control": control,
                "seed": seed, "classifier": f"LogisticRegression(lbfgs, max_iter={max_iter}, tol=1e-4: scikit-learn's "
                "default; the third decimal of an accuracy can move with it), features z-scored with fit statistics",
                "regularisation": f"L2, C={C:g} (scikit-learn's default inverse strength; not tuned)",
                "pooling": ("word vector = mean of its subword token vectors" if word_level else
                            "example vector = mean of its word vectors, each the mean of its subword token vectors")
                + ("; this store was extracted with --keep targets, so only target words have vectors: an "
                   "example vector is its target word's alone" if keep_targets else ""),
                "majority_baseline": "most frequent label of the fit split, scored on each eval split",
                "punctuation": ("scored like any other word (polar leaves PUNCT out by default)"
                                if word_level else None),
                "relations": "universal (subtype after ':' stripped)" if col in UNIVERSAL else None,
                "control_task": "Hewitt & Liang 2019: label per lower-cased word type drawn from the fit "
                                "label distribution" if control else None}
    if control:
        plot = [Series("accuracy", "probe accuracy", "-"),
                Series("control_accuracy", "control-task accuracy", "--"),
                Series("selectivity", "selectivity (probe - control)", "-", panel=1)]
        ylabels = ["accuracy", "selectivity"]
    else:
        plot, ylabels = [Series("accuracy", "probe accuracy", "-")], ["accuracy"]
    # one reference line per eval split (the same for every layer)
    hlines = [(v, f"majority label ({v:.2f})" if len(majority) == 1 else f"majority label, {sel} ({v:.2f})")
              for sel, v in majority.items() if np.isfinite(v)]
    write_results(out, "linear", rows, settings, plot, ylabels, model, variant,
                  extra={"dropped_items": dropped,
                         "dropped_reason": "no label, or the word lost all or some of its tokens to truncation "
                                           "(a partly kept word's mean would be its prefix's)"},
                  echo=echo, title_keys=("fit", "eval", "label"), hlines=hlines, column_docs=COLUMN_GLOSSARY,
                  plot_note="--keep targets store: example vectors are their target words alone" if keep_targets
                  else None)
    return rows
