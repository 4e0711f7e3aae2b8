import json
import math

import numpy as np
import pyarrow as pa
import pytest
from fake_store import FakeStore, make_conllu_store, make_wic_store

import jobs.polar as polar
from jobs.baselines import majority
from jobs.polar import (Counts, TreeData, baselines, chain_edges, classify_edges, decode_tree, dspr, evaluate_probe,
                        gold_edges, heldout_split, mst_edges, random_tree_uuas, relation_centroids,
                        run_polar, train_probe, tree_depths, tree_distances, universal_relation, valid_tree)
from pipeline.errors import LayerprobeError

# "the dog saw cats": the<-dog (det), dog<-saw (nsubj), saw = root, cats<-saw (obj)
HEADS = [2, 3, 0, 3]


def test_tree_distances_and_depths_of_a_four_word_tree():
    np.testing.assert_array_equal(tree_distances(HEADS), [[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]])
    np.testing.assert_array_equal(tree_depths(HEADS), [2, 1, 0, 1])
    assert gold_edges(HEADS) == [(1, 0), (2, 1), (2, 3)]


def test_valid_tree_rejects_cycles_and_forests():
    assert valid_tree(HEADS)
    assert not valid_tree([2, 1, 0])        # 1 <-> 2 cycle
    assert not valid_tree([0, 0])           # two roots
    assert not valid_tree([5, 0])           # head out of range


def test_mst_of_gold_distances_is_the_gold_tree():
    assert mst_edges(tree_distances(HEADS)) == [(0, 1), (1, 2), (2, 3)]


def test_mst_with_one_wrong_distance_gives_uuas_two_thirds():
    d = tree_distances(HEADS).astype(float)
    d[0, 3] = d[3, 0] = 0.5                 # 'the' looks close to 'cats'
    d[2, 3] = d[3, 2] = 2.5                 # and 'cats' far from 'saw'
    pred = mst_edges(d)
    assert pred == [(0, 1), (0, 3), (1, 2)]
    c = Counts()
    # orient the predicted edges: 1->0 (det, right), 0->3 (wrong edge), 1->2 (reversed)
    c.add([(1, 0, "det"), (2, 1, "nsubj"), (2, 3, "obj")], [(1, 0, "det"), (0, 3, "obj"), (1, 2, "nsubj")],
          ["det", "nsubj", "det"])
    m = c.metrics()
    assert m["uuas"] == pytest.approx(2 / 3)
    assert m["uas"] == pytest.approx(1 / 3) and m["las"] == pytest.approx(1 / 3)
    assert m["label_acc"] == pytest.approx(2 / 3)


def test_decoding_orients_and_labels_edges_by_centroid_cosine():
    # projected word vectors on a line; relation 'a' points +x (head - dep), 'b' points +y
    proj = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    names, cents = relation_centroids(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]), ["a", "a", "b"])
    assert names == ["a", "b"]
    np.testing.assert_allclose(cents, [[1, 0], [0, 1]])
    d = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], float)
    # edge (0,1): v = p0 - p1 = (-1, 0): best |cos| is 'a' with cos -1 -> 1 is the head
    # edge (1,2): v = p1 - p2 = (0, -1): 'b' with cos -1 -> 2 is the head
    assert decode_tree(d, proj, names, cents) == [(1, 0, "a"), (2, 1, "b")]
    lab, cos = classify_edges(np.array([[0.0, -5.0]]), cents)
    assert lab.tolist() == [1] and cos[0] == pytest.approx(-1.0)


def test_counts_score_direction_and_label():
    c = Counts()
    gold = [(1, 0, "det"), (2, 1, "nsubj"), (2, 3, "obj")]
    c.add(gold, [(1, 0, "det"), (1, 2, "nsubj"), (2, 3, "nsubj")], ["det", "nsubj", "nsubj"])
    m = c.metrics()
    assert (m["uuas"], m["uas"], m["las"]) == (1.0, pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert m["label_acc"] == pytest.approx(2 / 3)
    assert m["balanced_label_acc"] == pytest.approx(2 / 3)   # det 1, nsubj 1, obj 0


def test_dspr_is_one_for_perfect_distances_and_ignores_short_sentences():
    g5 = tree_distances([2, 0, 2, 3, 4])
    assert dspr([g5 * 3.0], [g5]) == pytest.approx(1.0)
    assert np.isnan(dspr([tree_distances(HEADS)], [tree_distances(HEADS)]))   # length 4 < 5


def test_universal_relation_strips_subtype():
    assert universal_relation("obl:tmod") == "obl" and universal_relation("nsubj") == "nsubj"


@pytest.fixture(scope="module")
def polar_rows(tmp_path_factory):
    # 100 fit sentences (90 trained on, 10 held out for early stopping): with 50, 3 Adam steps an
    # epoch leave the structural probe short of convergence when the 5 held-out sentences plateau early
    s = make_conllu_store(splits=(("dev", 100), ("test", 15)), d=32, max_len=9)
    out = tmp_path_factory.mktemp("polar")
    return s, out, run_polar(store=s, out=out, fit="dev", eval="test", rank=16, epochs=100, echo=False)


def test_polar_probe_recovers_trees_from_a_tree_embedding(polar_rows):
    _, _, rows = polar_rows
    top = [r for r in rows if r["layer"] == 2][0]
    bottom = [r for r in rows if r["layer"] == 0][0]
    assert top["uuas"] >= 0.75 and top["uuas"] > bottom["uuas"] + 0.3
    assert top["structural_uuas"] >= 0.75
    assert top["label_acc"] >= 0.5 and top["label_acc"] > bottom["label_acc"] + 0.25
    assert top["dspr"] > 0.7 and top["dspr"] > bottom["dspr"]
    assert 0 <= top["las"] <= top["uas"] <= top["uuas"] <= 1


def test_polar_results_have_no_static_row_and_say_why(polar_rows):
    import json

    _, out, rows = polar_rows
    assert "static" not in {r["layer"] for r in rows}
    doc = json.loads((out / "polar.json").read_text())
    assert "not applicable" in doc["static"]
    assert {"structural_las", "balanced_label_acc", "structural_dspr"} <= set(doc["columns"])


def test_polar_same_seed_gives_identical_csv(tmp_path):
    s = make_conllu_store(splits=(("dev", 20), ("test", 6)), n_layers=2, d=16, max_len=7)
    for k in "ab":
        run_polar(store=s, out=tmp_path / k, rank=8, epochs=4, seed=5, echo=False)
    assert (tmp_path / "a/polar.csv").read_bytes() == (tmp_path / "b/polar.csv").read_bytes()


def test_polar_needs_dependency_trees(tmp_path):
    with pytest.raises(LayerprobeError, match="heads"):
        run_polar(store=make_wic_store(splits=(("train", 3),)), out=tmp_path, fit="train", eval="train")


# ---------------------------------------------------------------- review fixes


def _strict_json(path):
    """json.loads that refuses the bare NaN / Infinity Python's json writes by default."""
    def refuse(c):
        raise ValueError(f"non-JSON constant {c}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_angle_term_matters_at_the_default_weight(polar_rows):
    # relation-specific edge directions exist in the top layer: the polar probe must read them much
    # better than the distance-only structural probe (at the old lambda 0.01 both gave ~0.61)
    _, out, rows = polar_rows
    top = [r for r in rows if r["layer"] == 2][0]
    assert top["label_acc"] >= 0.85 and top["label_acc"] >= top["structural_label_acc"] + 0.15
    assert top["las"] >= top["structural_las"] + 0.1
    settings = _strict_json(out / "polar.json")["settings"]
    assert settings["lambda_angle"] == polar.DEFAULT_LAMBDA_ANGLE >= 0.3
    assert "initialisation" in settings["loss"] and settings["lambda_angle_default_choice"]


def test_heldout_split_is_seeded_disjoint_and_about_ten_percent():
    tr, ho = heldout_split(200, 0.1, seed=3)
    assert len(ho) == 20 and len(tr) == 180 and not set(tr) & set(ho)
    np.testing.assert_array_equal(heldout_split(200, 0.1, seed=3)[1], ho)
    assert not np.array_equal(heldout_split(200, 0.1, seed=4)[1], ho)
    assert len(heldout_split(5, 0.1, 0)[1]) == 1 and len(heldout_split(1, 0.1, 0)[1]) == 0


def _toy_data(n=40, seed=0, d=12):
    """Sentences whose word vectors are a noisy tree embedding (enough to train on quickly)."""
    from fake_store import random_tree

    rng = np.random.default_rng(seed)
    td = TreeData([], [], [], [], [], [])
    for _ in range(n):
        length = int(rng.integers(4, 9))
        heads = random_tree(length, rng)
        x = np.zeros((length, d))
        for i in np.argsort(tree_depths(heads), kind="stable"):
            if heads[i]:
                x[i] = x[heads[i] - 1] + rng.normal(size=d) / np.sqrt(d)
        td.vectors.append(x + 0.05 * rng.normal(size=x.shape))
        td.dists.append(tree_distances(heads)); td.depths.append(tree_depths(heads))
        e = np.array(gold_edges(heads)).reshape(-1, 2)
        td.edges.append(e); td.edge_rels.append(["dep"] * len(e)); td.punct.append(np.zeros(length, bool))
    return td


def test_training_stops_on_a_heldout_plateau_and_keeps_the_best_heldout_parameters():
    data = _toy_data()
    # a rate far too large: the held-out loss jumps around, so the rate is cut 3 times, then it stops
    B, info = train_probe(data, rank=6, epochs=200, lambda_angle=0.0, lr=0.5, patience=2, seed=1)
    assert info["lr_decays"] == 3 and info["epochs"] < 200 and info["n_heldout_sentences"] == 4
    assert info["best_epoch"] <= info["epochs"]
    # the returned B is the best held-out one: re-scoring the held-out sentences gives its loss
    _, ho = heldout_split(len(data), 0.1, 1)
    held = data.subset(ho)
    pd = []
    for X, D in zip(held.vectors, held.dists):
        P = X @ B.T
        sq = (P * P).sum(1)
        pd.append(np.abs(np.maximum(sq[:, None] + sq[None, :] - 2 * P @ P.T, 0) - D).sum() / len(X) ** 2)
    assert np.mean(pd) == pytest.approx(info["heldout_dist_loss"], rel=1e-3)


def test_training_goes_on_while_the_heldout_loss_improves():
    _, info = train_probe(_toy_data(200), rank=6, epochs=40, lambda_angle=0.0, seed=0)
    assert info["n_heldout_sentences"] == 20 and info["best_epoch"] >= 20
    assert info["heldout_loss"] < 0.6                 # objective / its initial value


def test_counts_score_attachment_and_labels_on_separate_edge_sets():
    c = Counts()
    # edge 2 has a punctuation head: scored for its label, not for attachment
    c.add([(1, 0, "det"), (3, 2, "nsubj")], [(1, 0, "det")], ["det", "obj"], attach=[True, False])
    m = c.metrics()
    assert (c.n_edges, c.n_label_edges) == (1, 2)
    assert m["uuas"] == 1.0 and m["las"] == 1.0 and m["label_acc"] == 0.5


def test_punctuation_is_left_out_of_uuas_and_labels():
    # "saw cats ." : saw root, cats <-obj- saw, '.' <-punct- saw; word vectors = gold tree embedding
    heads = [0, 1, 1]
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    td = TreeData([x], [tree_distances(heads)], [tree_depths(heads)], [np.array(gold_edges(heads))],
                  [["obj", "punct"]], [np.array([False, False, True])])
    B = np.eye(2)
    with_p = evaluate_probe(B, td, td, include_punct=True)
    without = evaluate_probe(B, td, td, include_punct=False)
    assert with_p["n_edges"] == 2 and with_p["n_label_edges"] == 2
    assert without["n_edges"] == 1 and without["n_label_edges"] == 1
    assert without["uuas"] == 1.0 and without["label_acc"] == 1.0
    # the MST over the non-punct words never links punctuation: a wrong punct distance can't hurt
    td.vectors[0] = np.array([[0.0, 0.0], [1.0, 0.0], [1.05, 0.0]])     # '.' looks attached to 'cats'
    assert evaluate_probe(B, td, td, include_punct=True)["uuas"] == 0.5
    assert evaluate_probe(B, td, td, include_punct=False)["uuas"] == 1.0


def test_dspr_ranks_all_words_punctuation_included_as_hewitt_and_manning():
    # 6 words, word 6 punctuation (a leaf under word 2). Word vectors: one orthogonal unit vector per
    # edge on the path from the root, so squared distances are tree distances; then '.' is moved.
    heads = [2, 0, 2, 5, 3, 2]
    n = len(heads)
    x = np.zeros((n, n))
    for i in range(n):
        k = i
        while heads[k]:
            x[i, k] = 1.0
            k = heads[k] - 1
    x[5] = x[3] + 0.1                                   # '.' placed beside word 4
    punct = np.array([False] * 5 + [True])
    e = np.array(gold_edges(heads))
    td = TreeData([x], [tree_distances(heads)], [tree_depths(heads)], [e],
                  [["r"] * len(e)], [punct])
    without = evaluate_probe(np.eye(n), td, td, include_punct=False)
    with_p = evaluate_probe(np.eye(n), td, td, include_punct=True)
    # DSpr sees the misplaced '.' whatever include_punct says (H&M's evaluation code); UUAS does not
    assert without["dspr"] == with_p["dspr"] < 1.0
    assert without["uuas"] == 1.0 > with_p["uuas"]


def _store_with_punct(n_dev=30, n_test=8):
    """make_conllu_store with the last word of each sentence tagged PUNCT (a leaf: its relation
    becomes 'punct')."""
    s = make_conllu_store(splits=(("dev", n_dev), ("test", n_test)), n_layers=2, d=16, max_len=8)
    ex = s.examples
    upos, deprels = ex.column("upos").to_pylist(), ex.column("deprels").to_pylist()
    heads = ex.column("heads").to_pylist()
    for u, r, h in zip(upos, deprels, heads):
        last = len(h)
        if h[-1] != 0 and last not in h:      # a leaf that is not the root
            u[-1], r[-1] = "PUNCT", "punct"
    for name, col in (("upos", upos), ("deprels", deprels)):
        ex = ex.set_column(ex.column_names.index(name), name, pa.array(col))
    return FakeStore(s.manifest, s.tokens, ex, s._hidden, s._static)


def test_run_polar_excludes_punctuation_by_default_and_records_it(tmp_path):
    s = _store_with_punct()
    kw = dict(store=s, fit="dev", eval="test", rank=4, epochs=2, echo=False)
    excl = run_polar(out=tmp_path / "a", **kw)[0]
    incl = run_polar(out=tmp_path / "b", include_punct=True, **kw)[0]
    n_punct = sum(u[-1] == "PUNCT" for u, sp in zip(s.examples.column("upos").to_pylist(),
                                                     s.examples.column("split").to_pylist()) if sp == "test")
    assert n_punct > 0 and incl["n_edges"] - excl["n_edges"] == n_punct
    assert excl["n_label_edges"] == excl["n_edges"]        # no punct heads in this store
    a, b = _strict_json(tmp_path / "a/polar.json"), _strict_json(tmp_path / "b/polar.json")
    assert a["settings"]["include_punct"] is False and "excluded" in a["settings"]["punctuation"]
    assert b["settings"]["include_punct"] is True


@pytest.mark.parametrize("bad", [dict(rank=0), dict(rank=-3), dict(rank=2.5), dict(epochs=0), dict(epochs=-1),
                                 dict(lambda_angle=float("nan")), dict(lambda_angle=float("inf")),
                                 dict(lambda_angle=-0.5), dict(beta_root=float("nan"))])
def test_nonsense_hyperparameters_are_refused(tmp_path, bad):
    s = make_conllu_store(splits=(("dev", 6), ("test", 3)), n_layers=1, d=8, max_len=6)
    with pytest.raises(LayerprobeError, match=next(iter(bad))):
        run_polar(store=s, out=tmp_path / "o", fit="dev", eval="test", echo=False, **bad)
    assert not (tmp_path / "o").exists()          # refused before any work


def test_settings_record_what_ran_and_the_plot_shows_polar_and_structural(tmp_path, monkeypatch):
    seen = {}
    real = polar.write_results

    def spy(out, probe, rows, settings, plot_columns, *a, **k):
        seen["plot"] = plot_columns
        return real(out, probe, rows, settings, plot_columns, *a, **k)

    monkeypatch.setattr(polar, "write_results", spy)
    s = make_conllu_store(splits=(("dev", 12), ("test", 4)), n_layers=1, d=8, max_len=6)
    run_polar(store=s, out=tmp_path, fit="dev", eval="test", rank=1000, epochs=2, echo=False)
    doc = _strict_json(tmp_path / "polar.json")
    st = doc["settings"]
    assert st["rank"] == 8 and st["rank_requested"] == 1000          # capped at the model width
    assert st["max_epochs"] == 2 and st["n_heldout_sentences"] == 1 and "held-out" in st["early_stopping"]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in
               (st["lambda_angle"], st["beta_root"], st["lr"], st["heldout_fraction"]))
    assert {"epochs", "structural_epochs", "n_label_edges"} <= set(doc["columns"])
    plotted = {getattr(s, "column", s) for s in seen["plot"]}
    assert plotted == {"uuas", "structural_uuas", "las", "structural_las", "label_acc", "structural_label_acc",
                       "baseline_chain_uuas", "baseline_random_uuas", "baseline_chain_las",
                       "baseline_majority_label_acc"}


def test_polar_cli_options(tmp_path, capsys):
    import argparse

    from jobs.cli import add_probe_parsers, main

    parser = argparse.ArgumentParser()
    add_probe_parsers(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["probe", "polar", "--store", "S", "--out", "D"])
    assert a.include_punct is False and a.lambda_angle == polar.DEFAULT_LAMBDA_ANGLE
    assert (a.rank, a.epochs, a.beta_root) == (polar.DEFAULT_RANK, polar.DEFAULT_EPOCHS, polar.DEFAULT_BETA_ROOT)
    assert parser.parse_args(["probe", "polar", "--store", "S", "--out", "D", "--include-punct"]).include_punct
    assert main(["probe", "polar", "--store", str(tmp_path / "none.zarr"), "--out", str(tmp_path),
                 "--rank", "0"]) == 2
    assert "rank must be" in capsys.readouterr().err


def test_eval_sentences_shared_with_the_fit_are_refused_before_training(tmp_path, monkeypatch):
    import jobs.polar as polar

    monkeypatch.setattr(polar, "train_probe", lambda *a, **k: pytest.fail("trained before refusing"))
    s = make_conllu_store(splits=(("dev", 10), ("test", 4)), n_layers=1, d=8, max_len=6)
    with pytest.raises(LayerprobeError, match=r"eval selection 'dev\[:1\]' shares 1 of its 1 sentences"):
        run_polar(store=s, out=tmp_path / "o", fit="dev[:1]", eval="dev[:1]", echo=False)


# ---------------------------------------------------------------- baselines and column glossary


def _trees(sentences, punct=None) -> TreeData:
    """TreeData from (heads, relations) pairs; word vectors are placeholders (baselines ignore them)."""
    td = TreeData([], [], [], [], [], [])
    for k, (heads, rels) in enumerate(sentences):
        e = np.array(gold_edges(heads), dtype=np.int64).reshape(-1, 2)
        td.vectors.append(np.zeros((len(heads), 2)))
        td.dists.append(tree_distances(heads))
        td.depths.append(tree_depths(heads))
        td.edges.append(e)
        td.edge_rels.append([rels[d] for d in e[:, 1]])
        td.punct.append(np.zeros(len(heads), bool) if punct is None else np.asarray(punct[k], bool))
    return td


# "the dog saw big cats": the<-dog (det), dog<-saw (nsubj), saw root, big<-cats (amod), cats<-saw (obj)
CATS = ([2, 3, 0, 5, 3], ["det", "nsubj", "root", "amod", "obj"])


def test_chain_baseline_on_a_hand_built_tree():
    assert chain_edges([0, 1, 3]) == [(0, 1), (1, 3)]
    # fit: 'det' and 'nsubj' twice each (tie -> 'det', first in sorted order); 5 of 6 heads follow
    # their dependent, so the chain is oriented right-to-left
    fit = _trees([CATS, ([2, 3, 0], ["det", "nsubj", "root"])])
    b = baselines(fit, _trees([CATS]))
    # chain the-dog, dog-saw, saw-big, big-cats: 3 of the 4 gold edges (saw-cats is missed)
    assert b["chain_uuas"] == pytest.approx(3 / 4)
    assert b["chain_uas"] == pytest.approx(3 / 4)            # dog->the, saw->dog, cats->big
    assert b["majority_relation"] == "det" and b["majority_direction"] == "head after dependent"
    assert b["majority_label_acc"] == pytest.approx(1 / 4) and b["chain_las"] == pytest.approx(1 / 4)
    assert b["random_uuas"] == pytest.approx(2 / 5)


def test_majority_relation_comes_from_the_fit_split_not_the_eval_split():
    assert majority(["obj", "det", "obj"]) == "obj" and majority(["b", "a"]) == "a"
    fit = _trees([([2, 0], ["det", "root"])])
    ev = _trees([([0, 1, 1], ["root", "obj", "obj"])])
    assert baselines(fit, ev)["majority_label_acc"] == 0.0


def test_baselines_leave_punctuation_out_like_the_probe():
    # "saw cats ." : without punctuation the chain is saw-cats, the one scored edge: UUAS 1
    ev = _trees([([0, 1, 1], ["root", "obj", "punct"])], punct=[[False, False, True]])
    without = baselines(ev, ev, include_punct=False)
    with_p = baselines(ev, ev, include_punct=True)
    assert without["chain_uuas"] == 1.0 and without["random_uuas"] == 1.0
    assert with_p["chain_uuas"] == 0.5 and with_p["random_uuas"] == pytest.approx(2 / 3)
    assert without["majority_label_acc"] == 1.0          # 'punct' neither scored nor counted in the fit


def _pruefer_tree(seq, n):
    """Edges of the labelled tree with Pruefer sequence `seq` over n nodes."""
    degree = [1] * n
    for x in seq:
        degree[x] += 1
    edges = []
    for x in seq:
        leaf = min(i for i in range(n) if degree[i] == 1)
        edges.append(frozenset((leaf, x)))
        degree[leaf] -= 1
        degree[x] -= 1
    edges.append(frozenset(i for i in range(n) if degree[i] == 1))
    return edges


def test_random_tree_uuas_is_the_mean_over_all_spanning_trees():
    import itertools

    n, gold = 5, [frozenset(e) for e in [(1, 0), (2, 1), (4, 3), (2, 4)]]
    trees = [_pruefer_tree(seq, n) for seq in itertools.product(range(n), repeat=n - 2)]   # all 125
    exact = np.mean([sum(g in t for g in gold) / len(gold) for t in trees])
    assert random_tree_uuas([n], [len(gold)]) == pytest.approx(exact) == pytest.approx(2 / 5)
    # sentences weigh by their scored edges; a one-word sentence has none
    assert random_tree_uuas([2, 4, 1], [1, 3, 0]) == pytest.approx((1 * 1 + 3 * 0.5) / 4)
    assert math.isnan(random_tree_uuas([1], [0]))


def test_results_carry_baselines_and_a_glossary_of_every_column(polar_rows):
    s, out, rows = polar_rows
    doc = _strict_json(out / "polar.json")
    b = doc["baselines"]["test"]
    assert 0 < b["random_uuas"] < b["chain_uuas"] <= 1 and 0 < b["majority_label_acc"] < 1
    for r in rows:      # every row repeats its split's baselines: flat reference lines on the plot
        assert r["baseline_chain_uuas"] == pytest.approx(b["chain_uuas"], abs=1e-6)   # JSON rounds
        assert r["baseline_majority_label_acc"] == pytest.approx(b["majority_label_acc"], abs=1e-6)
    top = [r for r in rows if r["layer"] == 2][0]
    assert top["uuas"] > b["chain_uuas"] and top["label_acc"] > b["majority_label_acc"]
    gloss = doc["column_glossary"]
    undocumented = [c for c in doc["columns"] if c not in gloss and
                    not (c.startswith("structural_") and "structural_*" in gloss and c[11:] in gloss)]
    assert undocumented == []
    assert "recall" in gloss["balanced_label_acc"] and "tree edges" in gloss["heldout_dist_loss"]


def test_a_sentence_with_an_unannotated_relation_is_left_out_not_labelled_none(tmp_path):
    # The CoNLL-U reader stores DEPREL '_' as None; before, polar scored it as a relation named 'None'.
    s = make_conllu_store(splits=(("dev", 30), ("test", 8)), n_layers=2, d=16, max_len=8)
    ex = s.examples
    deprels = ex.column("deprels").to_pylist()
    deprels[-1][1] = None                                   # a test sentence
    ex = ex.set_column(ex.column_names.index("deprels"), "deprels", pa.array(deprels))
    s = FakeStore(s.manifest, s.tokens, ex, s._hidden, s._static)
    rows = run_polar(store=s, out=tmp_path, fit="dev", eval="test", rank=4, epochs=2, echo=False)
    doc = _strict_json(tmp_path / "polar.json")
    assert rows[0]["n_sentences"] == 7 and doc["excluded_sentences"] == {"dev": 0, "test": 1}
    assert "None" not in doc["baselines"]["test"]["majority_relation"]


@pytest.mark.parametrize("seed", [-5, 2**32, 99999999999999999999, True, 1.5])
def test_polar_seed_outside_0_to_2_32_minus_1_is_refused_before_any_work(tmp_path, seed):
    s = make_conllu_store(splits=(("dev", 6), ("test", 3)), n_layers=1, d=8, max_len=6)
    with pytest.raises(LayerprobeError, match=r"seed must be an integer in \[0, 2\*\*32 - 1 = 4294967295\]"):
        run_polar(store=s, out=tmp_path / "o", fit="dev", eval="test", seed=seed, echo=False)
    assert not (tmp_path / "o").exists() and s.reads == []
    with pytest.raises(LayerprobeError, match="seed must be"):
        polar.check_settings(rank=4, epochs=1, lambda_angle=1.0, beta_root=0.0, seed=seed)


def test_polar_largest_seed_trains():
    polar.check_settings(rank=4, epochs=1, lambda_angle=1.0, beta_root=0.0, seed=2**32 - 1)
    _, info = train_probe(_toy_data(10), rank=4, epochs=1, seed=2**32 - 1)
    assert info["epochs"] == 1
