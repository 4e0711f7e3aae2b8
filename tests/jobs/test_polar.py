import numpy as np
import pytest
from fake_store import make_conllu_store, make_wic_store

from jobs.polar import (Counts, classify_edges, decode_tree, dspr, gold_edges, mst_edges,
                        relation_centroids, run_polar, tree_depths, tree_distances, universal_relation,
                        valid_tree)
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
    s = make_conllu_store(splits=(("dev", 50), ("test", 15)), d=32, max_len=9)
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
