import json
from collections import Counter

import numpy as np
import pytest
from fake_store import make_conllu_store

from jobs.linear import control_labels, fit_score, run_linear
from pipeline.errors import LayerprobeError


def test_control_labels_depend_only_on_seed_and_type():
    a = control_labels(["dog", "cat", "dog"], ["N", "V"], seed=0)
    assert a[0] == a[2]
    assert control_labels(["cat"], ["N", "V"], seed=0) == [a[1]]          # independent of other types
    assert control_labels(["x"], ["N"], seed=1) == ["N"]


def test_control_labels_follow_the_fit_label_distribution():
    labels = ["A"] * 80 + ["B"] * 20
    draws = Counter(control_labels([f"w{i}" for i in range(4000)], labels, seed=3))
    assert set(draws) == {"A", "B"}
    assert draws["A"] / 4000 == pytest.approx(0.8, abs=0.03)


def test_fit_score_counts_labels_unseen_in_fit_as_wrong():
    X = np.array([[0.0], [0.1], [1.0], [1.1]])
    y = ["a", "a", "b", "b"]
    (acc,) = fit_score(X, y, [(np.array([[0.0], [1.0], [1.05]]), ["a", "b", "zzz"])], seed=0)
    assert acc == pytest.approx(2 / 3)


def test_fit_score_with_a_single_fit_class_predicts_it():
    (acc,) = fit_score(np.zeros((3, 2)), ["a"] * 3, [(np.zeros((2, 2)), ["a", "b"])], seed=0)
    assert acc == 0.5


@pytest.fixture(scope="module")
def store():
    return make_conllu_store(splits=(("dev", 60), ("test", 20)))


def test_upos_probe_is_accurate_at_the_top_and_selective(tmp_path, store):
    rows = run_linear(store=store, out=tmp_path, label="upos", control=True, echo=False)
    by = {r["layer"]: r for r in rows}
    assert set(by) == {"static", 0, 1, 2}
    assert by[2]["accuracy"] > 0.55 and by[2]["accuracy"] > by[0]["accuracy"] + 0.25
    assert by[2]["selectivity"] == pytest.approx(by[2]["accuracy"] - by[2]["control_accuracy"])
    assert by[2]["selectivity"] > 0.2
    doc = json.loads((tmp_path / "linear.json").read_text())
    assert doc["settings"]["level"] == "word" and doc["settings"]["control"] is True


def test_deprel_labels_use_the_universal_relation(tmp_path, store):
    rows = run_linear(store=store, out=tmp_path, label="deprel", fit="dev[:80%]", eval="dev[80%:],test",
                      echo=False)
    assert {r["split"] for r in rows} == {"dev[80%:]", "test"}
    assert rows[0]["n_classes"] == 8          # 7 relations (obl:tmod -> obl) + root


def test_example_level_label_column(tmp_path, store):
    rows = run_linear(store=store, out=tmp_path, label="genre", echo=False)
    assert rows[0]["n_fit"] == 60 and rows[0]["n_eval"] == 20
    assert json.loads((tmp_path / "linear.json").read_text())["settings"]["level"] == "example"


def test_unknown_label_column_lists_the_usable_ones(tmp_path, store):
    with pytest.raises(LayerprobeError, match=r"unknown label 'nope'.*upos.*deprel.*genre"):
        run_linear(store=store, out=tmp_path, label="nope", echo=False)


def test_linear_same_seed_gives_identical_csv(tmp_path):
    s = make_conllu_store(splits=(("dev", 20), ("test", 6)), n_layers=2, d=16)
    for k in "ab":
        run_linear(store=s, out=tmp_path / k, label="upos", control=True, seed=4, echo=False)
    assert (tmp_path / "a/linear.csv").read_bytes() == (tmp_path / "b/linear.csv").read_bytes()
