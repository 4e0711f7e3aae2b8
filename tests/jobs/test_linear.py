import json
import re
from collections import Counter

import numpy as np
import pytest
from fake_store import keep_only_targets, make_conllu_store, make_wic_store

from jobs.baselines import majority_accuracy
from jobs.linear import C, control_labels, fit_score, run_linear
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


# ---------------------------------------------------------------- refusals before any work


@pytest.mark.parametrize("label, match", [
    ("sent_id", r"not categorical: 80 distinct values over 80 labelled examples in the store \(60 over 60 in the "
                r"fit selection 'dev'\)"),
    ("heads", r"holds numbers \(int64\), not categories"),
    ("head", r"holds numbers"),
])
def test_non_categorical_labels_are_refused_before_reading_layers(tmp_path, label, match):
    s = make_conllu_store(splits=(("dev", 60), ("test", 20)))
    with pytest.raises(LayerprobeError, match=match):
        run_linear(store=s, out=tmp_path, label=label, echo=False)
    assert s.reads == []


def test_a_single_class_label_is_refused(tmp_path, store):
    with pytest.raises(LayerprobeError, match=r"label 'genre' has 1 class in the fit selection 'dev\[:1\]'"):
        run_linear(store=store, out=tmp_path, label="genre", fit="dev[:1]", eval="test", echo=False)


@pytest.mark.parametrize("fit, ev, shared", [("dev", "dev", 60), ("dev[:80%]", "dev[50%:]", 18),
                                              ("all", "test", 20)])
def test_linear_eval_overlapping_the_fit_is_refused(tmp_path, fit, ev, shared):
    s = make_conllu_store(splits=(("dev", 60), ("test", 20)))
    with pytest.raises(LayerprobeError, match=rf"eval selection '{re.escape(ev)}' shares {shared} of .* sentences with fit"):
        run_linear(store=s, out=tmp_path, label="upos", fit=fit, eval=ev, echo=False)
    assert s.reads == []


def test_linear_out_that_is_a_file_fails_before_reading(tmp_path):
    s = make_conllu_store(splits=(("dev", 10), ("test", 4)))
    (tmp_path / "f").write_text("x")
    with pytest.raises(LayerprobeError, match="exists and is not a folder"):
        run_linear(store=s, out=tmp_path / "f", label="upos", echo=False)
    assert s.reads == []


def test_linear_plot_titles_label_and_shows_selectivity_panel(tmp_path, store, monkeypatch):
    import jobs.results as res

    seen = {}
    real = res.plot_metric

    def spy(path, rows, metrics, title, ylabel, hlines=(), note=None, hollow=None):
        seen.update(title=title, metrics=res.as_series(metrics),
                    fig=real(path, rows, metrics, title, ylabel, hlines=hlines, note=note, hollow=hollow))
        return seen["fig"]

    monkeypatch.setattr(res, "plot_metric", spy)
    run_linear(store=store, out=tmp_path, label="upos", fit="dev[:80%]", eval="dev[80%:]", control=True,
               echo=False)
    assert "fit dev[:80%]" in seen["title"] and "label upos" in seen["title"]
    by = {m.column: m for m in seen["metrics"]}
    assert by["selectivity"].panel == 1 and by["control_accuracy"].style != by["accuracy"].style
    assert by["control_accuracy"].style != res.STATIC_STYLE
    fig = seen["fig"]
    assert len(fig.axes) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "probe accuracy" in legend and "control-task accuracy" in legend
    assert any("static" in t for t in legend)
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles["control-task accuracy"] != styles["static embedding: probe accuracy"]
    assert "static" in [t.get_text() for t in fig.axes[1].get_xticklabels()]


# ---------------------------------------------------------------- majority baseline, documented settings


def test_majority_accuracy_uses_the_fit_splits_most_frequent_label():
    assert majority_accuracy(["NOUN", "NOUN", "VERB"], ["NOUN", "VERB", "DET", "NOUN"]) == 0.5
    # the eval split's own majority (VERB) does not matter
    assert majority_accuracy(["NOUN", "NOUN", "VERB"], ["VERB", "VERB", "NOUN"]) == pytest.approx(1 / 3)
    assert majority_accuracy(["b", "a"], ["a"]) == 1.0            # ties: first in sorted order
    assert np.isnan(majority_accuracy(["a"], []))


def test_results_record_majority_baseline_pooling_and_regularisation(tmp_path, store, monkeypatch):
    import jobs.results as res

    seen = {}
    real = res.plot_metric

    def spy(path, rows, metrics, title, ylabel, hlines=(), note=None, hollow=None):
        seen["fig"] = real(path, rows, metrics, title, ylabel, hlines=hlines, note=note, hollow=hollow)
        return seen["fig"]

    monkeypatch.setattr(res, "plot_metric", spy)
    rows = run_linear(store=store, out=tmp_path, label="upos", fit="dev[:80%]", eval="dev[80%:]", control=True,
                      echo=False)
    fit = [u for u, sp in zip(store.examples.column("upos").to_pylist(), store.examples.column("split").to_pylist())
           if sp == "dev"]
    fit_labels = [x for sent in fit[:48] for x in sent]
    ev_labels = [x for sent in fit[48:] for x in sent]
    want = majority_accuracy(fit_labels, ev_labels)
    assert 0 < want < 1 and all(r["majority_accuracy"] == pytest.approx(want) for r in rows)
    legend = [t.get_text() for t in seen["fig"].axes[0].get_legend().get_texts()]
    assert f"majority label ({want:.2f})" in legend
    doc = json.loads((tmp_path / "linear.json").read_text())
    st = doc["settings"]
    assert "mean of its subword" in st["pooling"] and "L2" in st["regularisation"] and f"C={C:g}" in st["regularisation"]
    assert st["punctuation"].startswith("scored like any other word")
    assert set(doc["columns"]) <= set(doc["column_glossary"])


def test_a_targets_only_store_says_its_example_vectors_are_the_target_words(tmp_path):
    # --keep targets keeps only the target tokens: an "example vector" is then the target word's
    # alone, not the mean of the sentence's words that the settings otherwise describe.
    for s, out in ((make_wic_store(), tmp_path / "all"), (keep_only_targets(make_wic_store()), tmp_path / "t")):
        run_linear(store=s, out=out, label="label", fit="train", eval="dev", echo=False)
    full = json.loads((tmp_path / "all" / "linear.json").read_text())["settings"]["pooling"]
    targets = json.loads((tmp_path / "t" / "linear.json").read_text())["settings"]["pooling"]
    assert "--keep targets" not in full and "target word's alone" in targets


def test_the_control_task_is_refused_for_an_example_level_label(tmp_path, store):
    # H&L's control keys a random label on the word type; an example has none (its whole text would
    # be the type, unseen in eval: chance, reported as 'selectivity').
    with pytest.raises(LayerprobeError, match="label 'genre' is per example, which has no word type"):
        run_linear(store=store, out=tmp_path, label="genre", control=True, echo=False)


def test_a_wic_pair_split_between_fit_and_eval_is_refused(tmp_path):
    # Selection is by example; examples 10 and 11 are the two sides of one pair.
    with pytest.raises(LayerprobeError, match=r"eval selection 'train\[11:\]' shares 1 of its .* pairs"):
        run_linear(store=make_wic_store(), out=tmp_path, label="label", fit="train[:11]", eval="train[11:]",
                   echo=False)
    run_linear(store=make_wic_store(), out=tmp_path, label="label", fit="train[:12]", eval="train[12:]",
               echo=False)  # whole pairs on each side


def test_a_word_cut_by_truncation_is_found_and_a_whole_last_word_is_not():
    import pyarrow as pa

    from jobs.linear import partially_kept_words

    # example 0 (truncated): words 'walking' [0, 7) and 'home' [8, 12); 'home' kept only 'ho' [8, 10)
    # example 1 (truncated): its last stored word 'dog' [4, 7) is whole (the cut fell between words)
    # example 2 (not truncated): nothing to look at
    examples = pa.table({"example_id": [0, 1, 2], "truncated": [True, True, False],
                         "word_char_end": [[7, 12], [3, 7, 11], [4]]})
    tokens = pa.table({"example_id": [0, 0, 0, 1, 1, 1, 2],
                       "word_id": [0, 0, 1, 0, 1, -1, 0],
                       "char_end": [4, 7, 10, 3, 7, 0, 4]})
    assert partially_kept_words(tokens, examples) == {(0, 1)}


@pytest.mark.parametrize("seed", [-1, 2**32, 99999999999999999999, True])
def test_linear_seed_outside_0_to_2_32_minus_1_is_refused_before_reading_layers(tmp_path, store, seed):
    from jobs.linear import check_settings

    s = make_conllu_store(splits=(("dev", 20), ("test", 10)), n_layers=1, d=8)
    with pytest.raises(LayerprobeError, match=r"seed must be an integer in \[0, 2\*\*32 - 1 = 4294967295\]"):
        run_linear(store=s, out=tmp_path / "o", label="upos", seed=seed, echo=False)
    assert s.reads == [] and not (tmp_path / "o").exists()
    with pytest.raises(LayerprobeError, match="seed must be"):
        check_settings(seed=seed)
    check_settings(seed=2**32 - 1)


@pytest.mark.parametrize("label, classes", [("upos", 6), ("deprel", 8)])
def test_a_tiny_fit_selection_of_a_categorical_label_says_select_more_not_not_categorical(tmp_path, label, classes):
    s = make_conllu_store(splits=(("dev", 60), ("test", 20)), min_len=4, max_len=4)
    with pytest.raises(LayerprobeError) as e:
        run_linear(store=s, out=tmp_path, label=label, fit="dev[:1]", eval="test", echo=False)
    msg = str(e.value)
    assert re.search(rf"the fit selection 'dev\[:1\]' has only 4 labelled words for the \d classes of label "
                     rf"'{label}'.*the store has {classes} classes over 320 labelled words.*select more for the "
                     r"fit, e\.g\. --fit 'dev\[:80%\]'", msg), msg
    assert "not categorical" not in msg and s.reads == []


def test_check_categorical_tells_an_identifier_from_a_too_small_fit_selection():
    from jobs.linear import check_categorical

    store = [f"C{i % 5}" for i in range(100)]                     # 5 classes over 100 words
    with pytest.raises(LayerprobeError, match=r"fit selection 'dev\[:1\]' has only 3 labelled words for the 3 "
                                              r"classes .* the store has 5 classes over 100 labelled words"):
        check_categorical("upos", ["C0", "C1", "C2"], "dev[:1]", "words", store_labels=store)
    with pytest.raises(LayerprobeError, match=r"has 1 class in the fit selection 'dev\[:1\]', which has only 2 "
                                              r"labelled words .*select more"):
        check_categorical("upos", ["C0", "C0"], "dev[:1]", "words", store_labels=store)
    ids = [f"s{i}" for i in range(100)]                            # an identifier, on the store as a whole
    with pytest.raises(LayerprobeError, match=r"'sent_id' is not categorical: 100 distinct values over 100 "
                                              r"labelled examples in the store \(3 over 3 in the fit"):
        check_categorical("sent_id", ids[:3], "dev[:3]", "examples", store_labels=ids)
    with pytest.raises(LayerprobeError, match=r"over only 5 labelled examples in the whole store: too few to tell"):
        check_categorical("text", ids[:2], "dev[:2]", "examples", store_labels=ids[:5])
    check_categorical("upos", store[:20], "dev", "words", store_labels=store)   # fine: returns


def test_a_free_text_label_is_still_not_categorical_on_a_tiny_fit_selection(tmp_path, store):
    with pytest.raises(LayerprobeError, match=r"label 'text' is not categorical: 80 distinct values over 80"):
        run_linear(store=store, out=tmp_path, label="text", fit="dev[:1]", eval="test", echo=False)


def test_linear_duplicated_fit_or_eval_selection_is_refused(tmp_path):
    store = make_conllu_store(splits=(("dev", 20), ("test", 10)), n_layers=1, d=8)
    with pytest.raises(LayerprobeError, match=r"split selector 'dev\[:60%\]\+dev\[40%:\]' picks units twice"):
        run_linear(store=store, out=tmp_path / "o", label="upos", fit="dev[:60%]+dev[40%:]", eval="test",
                   echo=False)
    with pytest.raises(LayerprobeError, match=r"eval selections name 'test' twice"):
        run_linear(store=store, out=tmp_path / "o", label="upos", fit="dev", eval="test,test", echo=False)
    assert store.reads == [] and not (tmp_path / "o").exists()
