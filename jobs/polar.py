"""Polar probe (Diego-Simon, d'Ascoli, Chemla, Lakretz, King, NeurIPS 2024) and its distance-only
special case, the structural probe (Hewitt & Manning 2019).

A linear map B: d -> rank is trained on word vectors (mean-pooled subwords, z-scored with the fit
split's statistics) so that ||B(h_i - h_j)||^2 approximates tree distance, ||B h_i||^2 the depth,
and edge vectors B(h_head - h_dep) of the same relation point the same way (cos -> 1) while those of
different relations are orthogonal (cos -> 0). Decoding: the minimum spanning tree of predicted
distances; each MST edge gets the relation whose centroid (mean unit edge vector on the fit split)
has the largest |cos| with it, and the sign of that cosine orients it (positive: i is the head).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree

from jobs.results import write_results
from jobs.splits import example_splits, parse_selector_list, select_units
from jobs.storeio import model_info, require_columns, resolve_store, store_location
from jobs.words import word_pooling
from pipeline.errors import LayerprobeError

METRICS = ["uuas", "uas", "las", "label_acc", "balanced_label_acc", "dspr"]


# ---------------------------------------------------------------- trees


def universal_relation(rel: str) -> str:
    return str(rel).split(":", 1)[0]


def _ancestor_matrix(heads: np.ndarray) -> np.ndarray:
    """A[i, k] = 1 if k is i or an ancestor of i. Raises ValueError on a cycle or a bad head."""
    n = len(heads)
    A = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        k, steps = i, 0
        while True:
            A[i, k] = 1.0
            h = int(heads[k])
            if h == 0:
                break
            if not 1 <= h <= n or steps > n:
                raise ValueError("not a tree")
            k, steps = h - 1, steps + 1
    return A


def tree_distances(heads) -> np.ndarray:
    """[n, n] path lengths of the tree given by 1-based heads (0 = root): depth_i + depth_j -
    2 depth_lca, with the common ancestors counted by a product of ancestor matrices."""
    heads = np.asarray(heads, dtype=np.int64)
    A = _ancestor_matrix(heads)
    depth = A.sum(1) - 1.0
    common = A @ A.T                      # depth(lca) + 1 within one tree
    return depth[:, None] + depth[None, :] - 2.0 * (common - 1.0)


def tree_depths(heads) -> np.ndarray:
    """Edges from the root (the word whose head is 0) to each word."""
    return _ancestor_matrix(np.asarray(heads, dtype=np.int64)).sum(1) - 1.0


def gold_edges(heads) -> list[tuple[int, int]]:
    """(head, dependent) pairs, 0-based, excluding the root attachment."""
    return [(int(h) - 1, d) for d, h in enumerate(heads) if h > 0]


def valid_tree(heads) -> bool:
    heads = np.asarray(heads, dtype=np.int64)
    n = len(heads)
    if n == 0 or (heads < 0).any() or (heads > n).any() or (heads == 0).sum() != 1:
        return False
    try:
        _ancestor_matrix(heads)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- decoding + metrics


def mst_edges(pred_dist: np.ndarray) -> list[tuple[int, int]]:
    """Undirected edges (i < j) of the minimum spanning tree of a symmetric distance matrix."""
    d = np.asarray(pred_dist, dtype=np.float64)
    n = len(d)
    if n < 2:
        return []
    # csgraph treats 0 as 'no edge': shift every off-diagonal weight to be strictly positive
    w = np.triu(np.maximum((d + d.T) / 2.0, 0.0) + 1e-9, k=1)
    t = minimum_spanning_tree(w).tocoo()
    return sorted((min(i, j), max(i, j)) for i, j in zip(t.row.tolist(), t.col.tolist()))


def relation_centroids(edge_vectors: np.ndarray, relations: list[str]) -> tuple[list[str], np.ndarray]:
    """Mean unit edge vector (head - dependent) per relation: (names sorted, [R, r])."""
    v = np.asarray(edge_vectors, dtype=np.float64)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    names = sorted(set(relations))
    rel = np.asarray(relations, dtype=object)
    cents = np.stack([unit[rel == r].mean(axis=0) for r in names]) if names else np.zeros((0, v.shape[1]))
    return names, cents


def classify_edges(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each edge vector: index of the centroid with the largest |cos|, and that cosine."""
    v = np.asarray(vectors, dtype=np.float64)
    if len(v) == 0 or len(centroids) == 0:
        return np.zeros(len(v), dtype=np.int64), np.zeros(len(v))
    vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cn = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    cos = vn @ cn.T
    best = np.argmax(np.abs(cos), axis=1)
    return best, cos[np.arange(len(v)), best]


def decode_tree(pred_dist: np.ndarray, proj: np.ndarray, names: list[str], centroids: np.ndarray
                ) -> list[tuple[int, int, str]]:
    """(head, dependent, relation) for each MST edge; proj[i] = B h_i."""
    edges = mst_edges(pred_dist)
    if not edges:
        return []
    i, j = np.array(edges).T
    lab, cos = classify_edges(proj[i] - proj[j], centroids)
    out = []
    for a, b, l, c in zip(i.tolist(), j.tolist(), lab.tolist(), cos.tolist()):
        head, dep = (a, b) if c > 0 else (b, a)
        out.append((head, dep, names[l] if names else ""))
    return out


@dataclass
class Counts:
    """Corpus-level accumulators for the attachment and labelling metrics."""

    n_edges: int = 0
    undirected: int = 0
    directed: int = 0
    labelled: int = 0
    label_hits: int = 0

    def __post_init__(self):
        self.per_rel_total: dict[str, int] = defaultdict(int)
        self.per_rel_hits: dict[str, int] = defaultdict(int)

    def add(self, gold: list[tuple[int, int, str]], pred: list[tuple[int, int, str]],
            gold_labels_pred: list[str]) -> None:
        """gold/pred: (head, dep, rel); gold_labels_pred: the label predicted for each gold edge."""
        pred_dir = {(h, d): r for h, d, r in pred}
        pred_und = {frozenset((h, d)) for h, d, _ in pred}
        for (h, d, r), lp in zip(gold, gold_labels_pred):
            self.n_edges += 1
            self.undirected += frozenset((h, d)) in pred_und
            if (h, d) in pred_dir:
                self.directed += 1
                self.labelled += pred_dir[(h, d)] == r
            self.label_hits += lp == r
            self.per_rel_total[r] += 1
            self.per_rel_hits[r] += lp == r

    def metrics(self) -> dict[str, float]:
        n = self.n_edges
        if n == 0:
            return {k: float("nan") for k in ["uuas", "uas", "las", "label_acc", "balanced_label_acc"]}
        recalls = [self.per_rel_hits[r] / t for r, t in self.per_rel_total.items()]
        return {"uuas": self.undirected / n, "uas": self.directed / n, "las": self.labelled / n,
                "label_acc": self.label_hits / n, "balanced_label_acc": float(np.mean(recalls))}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Row-wise ranks (1-based, ties share their average rank), like scipy.stats.rankdata, without
    importing scipy.stats (slow to import)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i, row in enumerate(x):
        _, inv, counts = np.unique(row, return_inverse=True, return_counts=True)
        out[i] = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]
    return out


def spearman_rows(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of pred with the same row of gold (NaN for constant rows)."""
    rp = _average_ranks(pred)
    rg = _average_ranks(gold)
    rp = rp - rp.mean(axis=1, keepdims=True)
    rg = rg - rg.mean(axis=1, keepdims=True)
    den = np.sqrt((rp ** 2).sum(axis=1) * (rg ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rp * rg).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def dspr(pred_dists: list[np.ndarray], gold_dists: list[np.ndarray], min_len: int = 5, max_len: int = 50) -> float:
    """Hewitt & Manning's DSpr.: per word, Spearman between its predicted and gold distances to all
    words of the sentence; averaged per sentence, then per sentence length, then macro-averaged
    over lengths min_len..max_len. NaN when no sentence qualifies."""
    by_len: dict[int, list[float]] = defaultdict(list)
    for p, g in zip(pred_dists, gold_dists):
        n = len(g)
        if min_len <= n <= max_len:
            rho = spearman_rows(p, g)
            if np.isfinite(rho).any():
                by_len[n].append(float(np.nanmean(rho)))
    if not by_len:
        return float("nan")
    return float(np.mean([np.mean(v) for v in by_len.values()]))


# ---------------------------------------------------------------- training


@dataclass
class TreeData:
    """Sentences of one split: word vectors plus gold trees."""

    vectors: list[np.ndarray]           # [n_s, d] per sentence
    dists: list[np.ndarray]             # [n_s, n_s]
    depths: list[np.ndarray]            # [n_s]
    edges: list[np.ndarray]             # [m_s, 2] (head, dep) 0-based
    edge_rels: list[list[str]]          # [m_s]

    def __len__(self):
        return len(self.vectors)


def _batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable")   # similar lengths together: little padding
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def train_probe(data: TreeData, *, rank: int = 128, epochs: int = 100, lambda_angle: float = 0.01,
                beta_root: float = 0.01, seed: int = 0, batch_size: int = 20,
                # Hewitt & Manning's Adam rate: 5e-3 oscillates on the L1 distance loss (fit UUAS 0.24
                # vs 0.63 at 1e-3 on MiniLM layer 3, 240 EWT sentences).
                lr: float = 1e-3,
                patience: int = 5, max_edges_angle: int = 512) -> tuple[np.ndarray, float]:
    """Fit B ([rank, d]) with Adam on dist + beta*depth + lambda*angle; early stop on the epoch's fit
    loss. Returns (B, best epoch loss). lambda_angle = 0 gives the structural probe."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: extra threads only add contention (and nondeterminism)
    try:
        return _train(torch, data, rank, epochs, lambda_angle, beta_root, seed, batch_size, lr, patience,
                      max_edges_angle)
    finally:
        torch.set_num_threads(threads)


def _train(torch, data, rank, epochs, lambda_angle, beta_root, seed, batch_size, lr, patience, max_edges_angle):
    g = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    d = data.vectors[0].shape[1]
    rank = min(rank, d) if rank > 0 else d
    B = (torch.randn(rank, d, generator=g, dtype=torch.float32) / np.sqrt(d * rank)).requires_grad_(True)
    # Adam by hand: torch.optim's import pulls in torch._dynamo (seconds of start-up for nothing here)
    m1, m2, step, b1, b2, eps = torch.zeros_like(B), torch.zeros_like(B), 0, 0.9, 0.999, 1e-8
    rel_ids = {r: i for i, r in enumerate(sorted({r for rs in data.edge_rels for r in rs}))}

    lengths = np.array([len(v) for v in data.vectors])
    prepared = []
    for idx in _batches(lengths, batch_size):
        n_max = int(lengths[idx].max())
        X = np.zeros((len(idx), n_max, d), np.float32)
        D = np.zeros((len(idx), n_max, n_max), np.float32)
        Dep = np.zeros((len(idx), n_max), np.float32)
        M = np.zeros((len(idx), n_max), np.float32)
        eb, eh, ed, er = [], [], [], []
        for k, s in enumerate(idx):
            n = lengths[s]
            X[k, :n] = data.vectors[s]
            D[k, :n, :n] = data.dists[s]
            Dep[k, :n] = data.depths[s]
            M[k, :n] = 1
            e = data.edges[s]
            eb += [k] * len(e); eh += e[:, 0].tolist(); ed += e[:, 1].tolist()
            er += [rel_ids[r] for r in data.edge_rels[s]]
        prepared.append(tuple(torch.from_numpy(a) for a in (X, D, Dep, M)) + tuple(
            torch.tensor(a, dtype=torch.long) for a in (eb, eh, ed, er)))

    def batch_loss(X, D, Dep, M, eb, eh, ed, er):
        P = X @ B.T                                          # [b, n, r]
        sq = (P * P).sum(-1)                                 # [b, n]
        pd = (sq[:, :, None] + sq[:, None, :] - 2 * P @ P.transpose(1, 2)).clamp_min(0)
        pair_mask = M[:, :, None] * M[:, None, :]
        n = M.sum(1)
        dist = ((pd - D).abs() * pair_mask).sum((1, 2)) / n ** 2
        depth = ((sq - Dep).abs() * M).sum(1) / n
        loss = dist.mean() + beta_root * depth.mean()
        if lambda_angle > 0 and len(eb) > 1:
            if len(eb) > max_edges_angle:   # sample edges, so the pair count stays bounded
                keep = torch.randperm(len(eb), generator=g)[:max_edges_angle]
                eb, eh, ed, er = eb[keep], eh[keep], ed[keep], er[keep]
            E = P[eb, eh] - P[eb, ed]
            En = E / E.norm(dim=1, keepdim=True).clamp_min(1e-8)
            cos = En @ En.T
            target = (er[:, None] == er[None, :]).float()
            iu = torch.triu_indices(len(eb), len(eb), offset=1)
            loss = loss + lambda_angle * ((cos - target)[iu[0], iu[1]] ** 2).mean()
        return loss

    best, best_B, bad = float("inf"), B.detach().clone(), 0
    for _ in range(max(1, epochs)):
        total, count = 0.0, 0
        for bi in rng.permutation(len(prepared)):
            B.grad = None
            loss = batch_loss(*prepared[bi])
            loss.backward()
            with torch.no_grad():
                step += 1
                m1.mul_(b1).add_(B.grad, alpha=1 - b1)
                m2.mul_(b2).addcmul_(B.grad, B.grad, value=1 - b2)
                denom = (m2 / (1 - b2 ** step)).sqrt_().add_(eps)
                B.addcdiv_(m1, denom, value=-lr / (1 - b1 ** step))
            total += float(loss.detach()) * len(prepared[bi][0])
            count += len(prepared[bi][0])
        epoch_loss = total / max(count, 1)
        if epoch_loss < best - 1e-4 * abs(best if np.isfinite(best) else 1.0):
            best, best_B, bad = epoch_loss, B.detach().clone(), 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best_B.numpy().astype(np.float64), float(best)


def evaluate_probe(B: np.ndarray, fit: TreeData, evals: TreeData) -> dict[str, float]:
    """Metrics of a trained B on `evals`, with relation centroids from `fit`."""
    fit_vecs, fit_rels = [], []
    for X, e, rels in zip(fit.vectors, fit.edges, fit.edge_rels):
        if len(e):
            P = X @ B.T
            fit_vecs.append(P[e[:, 0]] - P[e[:, 1]])
            fit_rels += list(rels)
    names, cents = relation_centroids(np.concatenate(fit_vecs) if fit_vecs else np.zeros((0, len(B))), fit_rels)
    counts = Counts()
    preds, golds = [], []
    for X, dist, e, rels in zip(evals.vectors, evals.dists, evals.edges, evals.edge_rels):
        P = X @ B.T
        sq = (P * P).sum(1)
        pd = np.maximum(sq[:, None] + sq[None, :] - 2 * P @ P.T, 0.0)
        pred = decode_tree(pd, P, names, cents)
        if len(e):
            lab, _ = classify_edges(P[e[:, 0]] - P[e[:, 1]], cents)
            gold_lab = [names[l] for l in lab] if names else [""] * len(e)
        else:
            gold_lab = []
        counts.add([(int(h), int(d), r) for (h, d), r in zip(e, rels)], pred, gold_lab)
        preds.append(pd)
        golds.append(dist)
    out = counts.metrics()
    out["dspr"] = dspr(preds, golds)
    out["n_edges"] = counts.n_edges
    return out


# ---------------------------------------------------------------- store side


def load_trees(s, relations: str = "universal"):
    """Word pooling over all examples with a valid tree, plus per-example gold annotations."""
    ex = s.examples
    if "heads" not in ex.column_names or "deprels" not in ex.column_names:
        raise LayerprobeError(
            "the polar probe needs dependency trees (examples columns 'heads' and 'deprels', from a "
            f"CoNLL-U source); this store's examples have: {', '.join(ex.column_names)}"
        )
    pooling = word_pooling(s.tokens)
    ex_ids = ex.column("example_id").to_numpy()
    heads = ex.column("heads").to_pylist()
    deprels = ex.column("deprels").to_pylist()
    words = ex.column("words").to_pylist() if "words" in ex.column_names else heads
    info = {}
    for i, e in enumerate(ex_ids.tolist()):
        h, r = heads[i], deprels[i]
        if h is None or r is None or len(h) != len(r) or len(h) != len(words[i]) or not valid_tree(h):
            continue
        groups = pooling.lookup(np.full(len(h), e), np.arange(len(h)))
        if (groups < 0).any():          # a word without tokens (truncated): the tree is incomplete
            continue
        rels = [universal_relation(x) if relations == "universal" else str(x) for x in r]
        edges = np.array(gold_edges(h), dtype=np.int64).reshape(-1, 2)
        info[int(e)] = (groups, tree_distances(h), tree_depths(h), edges, [rels[d] for d in edges[:, 1]])
    return pooling, info


def _tree_data(info, ex_ids, word_vecs) -> TreeData:
    td = TreeData([], [], [], [], [])
    for e in ex_ids:
        groups, dist, depth, edges, rels = info[int(e)]
        td.vectors.append(word_vecs[groups])
        td.dists.append(dist)
        td.depths.append(depth)
        td.edges.append(edges)
        td.edge_rels.append(rels)
    return td


def run_polar(*, store: Any, out: str | os.PathLike, fit: str = "dev", eval: str | list[str] = "test",
              rank: int = 128, epochs: int = 100, lambda_angle: float = 0.01, beta_root: float = 0.01,
              seed: int = 0, relations: str = "universal", layers: list[int] | None = None,
              echo: bool = True) -> list[dict]:
    """Polar and structural probes per layer. Returns the result rows."""
    if relations not in ("universal", "full"):
        raise LayerprobeError(f"relations must be 'universal' or 'full', got {relations!r}")
    evals = parse_selector_list(eval) if isinstance(eval, str) else list(eval)
    s = resolve_store(store)
    pooling, info = load_trees(s, relations)
    ex_ids = s.examples.column("example_id").to_numpy()
    order = np.argsort(ex_ids, kind="stable")
    ordered_ids = ex_ids[order]
    splits = [example_splits(s.examples)[i] for i in order]

    def pick(sel):
        chosen = ordered_ids[select_units(splits, sel)]
        ok = np.array([e for e in chosen.tolist() if e in info], dtype=np.int64)
        return ok, int(len(chosen) - len(ok))

    fit_ids, fit_excl = pick(fit)
    if len(fit_ids) == 0:
        raise LayerprobeError(f"fit split {fit!r} has no sentence with a complete tree and word vectors")
    excluded = {fit: fit_excl}
    eval_ids = []
    for sel in evals:
        ids, n_ex = pick(sel)
        excluded[sel] = n_ex
        eval_ids.append((sel, ids))
    fit_groups = np.concatenate([info[int(e)][0] for e in fit_ids])

    rows = []
    for layer, W in pooling.layers(s, list(s.layers) if layers is None else list(layers)):
        W = W.astype(np.float64)
        mu = W[fit_groups].mean(0)
        sd = W[fit_groups].std(0)
        W = (W - mu) / np.where(sd > 1e-12, sd, 1.0)
        fit_data = _tree_data(info, fit_ids, W)
        results = {}
        for name, lam in (("", lambda_angle), ("structural_", 0.0)):
            B, loss = train_probe(fit_data, rank=rank, epochs=epochs, lambda_angle=lam,
                                  beta_root=beta_root, seed=seed)
            results[name] = (B, loss)
        for sel, ids in eval_ids:
            ev = _tree_data(info, ids, W)
            row: dict[str, Any] = {"layer": layer, "split": sel}
            for name, (B, loss) in results.items():
                m = evaluate_probe(B, fit_data, ev)
                row.update({name + k: m[k] for k in METRICS})
            row.update({"n_sentences": len(ids), "n_edges": m["n_edges"],
                        "fit_loss": results[""][1], "structural_fit_loss": results["structural_"][1]})
            rows.append(row)
    model, variant = model_info(s)
    settings = {"store": store_location(store, s), "fit": fit, "eval": evals, "rank": rank, "epochs": epochs,
                "lambda_angle": lambda_angle, "beta_root": beta_root, "seed": seed, "relations": relations,
                "optimizer": "Adam lr=1e-3, batches of 20 sentences, early stop on fit loss (patience 5)",
                "features": "word = mean of its subword vectors, z-scored per dimension with fit statistics",
                "structural_baseline": "same probe with lambda_angle = 0 (Hewitt & Manning 2019)"}
    write_results(out, "polar", rows, settings, ["las", "structural_las"], "LAS", model, variant,
                  extra={"static": "not applicable: the polar probe needs contextual word vectors; no static row",
                         "n_fit_sentences": int(len(fit_ids)), "excluded_sentences": excluded,
                         "excluded_sentences_reason": "no valid tree, or a word with no token (truncation)"},
                  echo=echo)
    return rows
