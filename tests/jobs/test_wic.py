import json

import numpy as np
import pytest
from fake_store import keep_only_targets, make_conllu_store, make_wic_store

from jobs.wic import (accuracy_at, batch_slices, best_threshold, binomial_ci95, cosine, global_zscorer, run_wic,
                      zscore_batches)
from pipeline.errors import LayerprobeError


def test_best_threshold_separates_obviously_separable_similarities():
    sims = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([False, False, False, True, True])
    thr, acc = best_threshold(sims, labels)
    assert acc == 1.0 and thr == pytest.approx(0.55)
    assert accuracy_at(sims, labels, thr) == 1.0


def test_best_threshold_on_a_grid_picks_a_grid_point():
    sims = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([False, False, False, True, True])
    thr, acc = best_threshold(sims, labels, grid_step=0.25)
    assert acc == 1.0 and thr == pytest.approx(0.5)   # first grid point in [0.3, 0.8)


def _self_cosines_straddling_one():
    """Cosines of 200 vectors with themselves: 1 up to float64 rounding, some above, some not."""
    x = np.random.default_rng(0).normal(size=(200, 384)).astype(np.float32)
    sims = cosine(x, x)
    assert (sims > 1).any() and (sims <= 1).any() and np.abs(sims - 1).max() < 1e-12
    return sims


@pytest.mark.parametrize("grid_step", [None, 0.5])
def test_identical_vectors_tie_whatever_their_cosines_rounding(grid_step):
    # labels that only the rounding noise separates: the old search put its threshold at 1.0 between
    # 0.9999999999999998 and 1.0000000000000002 and reported a fit accuracy of 1.0
    sims = _self_cosines_straddling_one()
    labels = sims > 1
    thr, acc = best_threshold(sims, labels, grid_step=grid_step)
    assert acc == pytest.approx(max(labels.mean(), 1 - labels.mean()))
    assert accuracy_at(sims, labels, thr) == acc               # the eval decision ties them too
    assert accuracy_at(sims, labels, 1.0) == 1 - labels.mean()  # even on the threshold 1.0 itself


def test_best_threshold_all_positive_goes_below_minimum():
    thr, acc = best_threshold(np.array([0.4, 0.5]), np.array([True, True]))
    assert acc == 1.0 and thr < 0.4


def test_global_zscorer_uses_fit_statistics():
    fit = np.array([[0.0, 10.0], [2.0, 10.0]])
    out = global_zscorer(fit)(np.array([[1.0, 10.0], [3.0, 11.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0], [2.0, 1.0]])   # std 0 -> left unscaled


def _z(x):
    return (x - x.mean(0)) / x.std(0)


def test_zscore_batches_standardise_each_side_of_each_block_with_its_own_stats():
    # as the reference code (RyanLiut/LLM_LexSem main.py): anisotropy_removal(side 1 batch),
    # anisotropy_removal(side 2 batch); the old code pooled both sides of a batch
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3))
    b = rng.normal(size=(4, 3)) * 5 + 100
    ea, eb = zscore_batches(a, b, batch_pairs=2)
    np.testing.assert_allclose(ea, np.concatenate([_z(a[:2]), _z(a[2:])]))
    np.testing.assert_allclose(eb, np.concatenate([_z(b[:2]), _z(b[2:])]))


def test_batch_slices_merge_a_final_batch_under_half_a_batch():
    assert batch_slices(638, 30)[-1] == slice(600, 638)          # WiC dev: 8 leftover pairs merged
    assert batch_slices(5428, 30)[-1] == slice(5400, 5428)       # WiC train: 28 leftover kept
    assert batch_slices(31, 30) == [slice(0, 31)]
    assert batch_slices(10, 30) == [slice(0, 10)]
    assert batch_slices(45, 30) == [slice(0, 30), slice(30, 45)]


def test_zscore_batches_last_single_pair_is_not_degenerate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(31, 4)), rng.normal(size=(31, 4))
    ea, eb = zscore_batches(a, b, batch_pairs=30)
    np.testing.assert_allclose(ea, _z(a))   # one batch of 31, not 30 + a lone pair
    np.testing.assert_allclose(eb, _z(b))
    assert abs(cosine(ea, eb)[-1]) < 1 - 1e-6


def test_binomial_ci95_is_the_normal_approximation():
    lo, hi = binomial_ci95(0.5, 638)
    assert hi - 0.5 == pytest.approx(1.959964 * np.sqrt(0.25 / 638)) and 0.5 - lo == pytest.approx(hi - 0.5)
    assert binomial_ci95(1.0, 10) == (1.0, 1.0) and binomial_ci95(float("nan"), 10) == (None, None)


def test_cosine_of_rows():
    np.testing.assert_allclose(cosine(np.array([[1.0, 0], [1, 1]]), np.array([[0, 2.0], [2, 2]])), [0.0, 1.0])


@pytest.mark.parametrize("variant", ["base", "repeat", "prompt"])
def test_wic_accuracy_rises_with_layer_on_every_variant(tmp_path, variant):
    s = make_wic_store(variant=variant)
    rows = run_wic(store=s, out=tmp_path, echo=False)
    acc = {(r["layer"], r["split"]): r["accuracy"] for r in rows}
    assert acc[(3, "dev")] >= 0.9 and acc[(3, "test")] >= 0.9
    assert acc[(0, "dev")] <= 0.75
    assert {r["layer"] for r in rows} == {"static", 0, 1, 2, 3}
    assert (tmp_path / "wic.csv").exists() and (tmp_path / "wic.png").exists()


@pytest.mark.parametrize("mode", ["global", "batch", "none"])
def test_wic_standardisation_modes_all_run(tmp_path, wic_store, mode):
    rows = run_wic(store=wic_store, out=tmp_path, standardize=mode, threshold_grid=0.05, echo=False)
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_wic_reads_only_target_rows_once_per_layer(tmp_path):
    s = make_wic_store()
    run_wic(store=s, out=tmp_path, echo=False)
    n_target = int(np.sum(s.tokens.column("is_target").to_numpy()))
    assert sorted(L for L, _ in s.reads) == s.layers
    assert all(n == n_target for _, n in s.reads)


def test_wic_excludes_and_counts_pairs_whose_target_was_not_found(tmp_path):
    import json

    s = make_wic_store(not_found_pairs=(91, 92, 93))   # the first dev pairs
    rows = run_wic(store=s, out=tmp_path, eval="dev", echo=False)
    assert rows[0]["n_pairs"] == 42
    assert json.loads((tmp_path / "wic.json").read_text())["excluded_pairs"] == {"train": 0, "dev": 3}


def test_wic_pair_slices_never_separate_a_pair(tmp_path, wic_store):
    a = run_wic(store=wic_store, out=tmp_path, fit="train", eval="dev[:80%],dev[80%:]", echo=False)
    n = {r["split"]: r["n_pairs"] for r in a}
    assert n == {"dev[:80%]": 36, "dev[80%:]": 9}


def test_wic_unlabelled_eval_split_is_a_clear_error(tmp_path):
    s = make_wic_store(unlabelled=("test",))
    with pytest.raises(LayerprobeError, match="unlabelled"):
        run_wic(store=s, out=tmp_path, eval="dev,test", echo=False)


def test_wic_default_eval_is_every_other_labelled_split(tmp_path):
    s = make_wic_store(unlabelled=("test",))
    rows = run_wic(store=s, out=tmp_path, echo=False)
    assert {r["split"] for r in rows} == {"dev"}


def test_wic_on_a_store_without_targets_refuses(tmp_path):
    with pytest.raises(LayerprobeError, match="store has no WiC targets"):
        run_wic(store=make_conllu_store(splits=(("dev", 4),)), out=tmp_path, echo=False)


def test_wic_unknown_split_lists_existing_ones(tmp_path, wic_store):
    with pytest.raises(LayerprobeError, match="dev, test, train"):
        run_wic(store=wic_store, out=tmp_path, fit="validation", echo=False)


def test_wic_same_seed_gives_identical_csv(tmp_path, wic_store):
    run_wic(store=wic_store, out=tmp_path / "a", seed=3, echo=False)
    run_wic(store=wic_store, out=tmp_path / "b", seed=3, echo=False)
    assert (tmp_path / "a/wic.csv").read_bytes() == (tmp_path / "b/wic.csv").read_bytes()


# ---------------------------------------------------------------- fit/eval leakage


def test_wic_default_eval_excludes_the_split_a_sliced_fit_draws_from(tmp_path, wic_store):
    rows = run_wic(store=wic_store, out=tmp_path, fit="train[:80%]", echo=False)
    assert {r["split"] for r in rows} == {"dev", "test"}          # not 'train' (80% of it fitted)


@pytest.mark.parametrize("fit, ev, shared", [
    ("dev", "dev", 45), ("train[:80%]", "train[50%:]", 27), ("all", "dev", 45), ("dev[:1]", "test,dev[:1]", 1),
])
def test_wic_eval_overlapping_the_fit_is_refused_before_reading(tmp_path, fit, ev, shared):
    s = make_wic_store()
    with pytest.raises(LayerprobeError) as e:
        run_wic(store=s, out=tmp_path, fit=fit, eval=ev, echo=False)
    msg = str(e.value)
    assert f"shares {shared} of" in msg and repr(fit) in msg and "pairs" in msg
    assert s.reads == [] and not (tmp_path / "wic.json").exists()


def test_wic_fit_all_without_eval_says_there_is_nothing_left(tmp_path, wic_store):
    with pytest.raises(LayerprobeError, match="leaves out"):
        run_wic(store=wic_store, out=tmp_path, fit="all", echo=False)


# ---------------------------------------------------------------- prompt variant: static row, layer 0


def test_prompt_static_row_uses_the_target_words_own_tokens(tmp_path):
    s = make_wic_store(variant="prompt", static_signal=True)
    rows = run_wic(store=s, out=tmp_path, eval="dev", echo=False)
    static = [r for r in rows if r["layer"] == "static"][0]
    assert static["accuracy"] >= 0.95        # the final '"' alone gives a constant cosine: 0.5
    doc = json.loads((tmp_path / "wic.json").read_text())
    assert "word_id == target_word_id" in doc["static"]
    assert "position" in doc["layer_0"]


def test_prompt_static_row_is_dropped_with_a_reason_when_only_targets_were_kept(tmp_path):
    s = keep_only_targets(make_wic_store(variant="prompt", static_signal=True))
    rows = run_wic(store=s, out=tmp_path, eval="dev", echo=False)
    assert "static" not in {r["layer"] for r in rows} and {0, 1, 2, 3} <= {r["layer"] for r in rows}
    doc = json.loads((tmp_path / "wic.json").read_text())
    assert doc["static"].startswith("not computed") and "--keep targets" in doc["static"]


def test_base_variant_static_row_is_unchanged_and_has_no_layer_0_note(tmp_path):
    s = make_wic_store(static_signal=True)
    rows = run_wic(store=s, out=tmp_path, eval="dev", echo=False)
    assert [r for r in rows if r["layer"] == "static"][0]["accuracy"] >= 0.95
    assert "layer_0" not in json.loads((tmp_path / "wic.json").read_text())


# ---------------------------------------------------------------- output, intervals, plot


def test_wic_rows_carry_95_percent_intervals(tmp_path, wic_store):
    rows = run_wic(store=wic_store, out=tmp_path, eval="dev", echo=False)
    for r in rows:
        lo, hi = binomial_ci95(r["accuracy"], r["n_pairs"])
        assert (r["ci95_low"], r["ci95_high"]) == (lo, hi) and lo <= r["accuracy"] <= hi
    assert "binomial" in json.loads((tmp_path / "wic.json").read_text())["settings"]["interval"]


def _spy_plot(monkeypatch):
    import jobs.results as res

    seen = {}
    real = res.plot_metric

    def spy(path, rows, metrics, title, ylabel, hlines=(), note=None, hollow=None):
        seen["fig"] = real(path, rows, metrics, title, ylabel, hlines=hlines, note=note, hollow=hollow)
        seen.update(title=title, hlines=list(hlines), metrics=res.as_series(metrics), note=note)
        return seen["fig"]

    monkeypatch.setattr(res, "plot_metric", spy)
    return seen


def test_wic_plot_shows_fit_mode_majority_baseline_and_intervals(tmp_path, wic_store, monkeypatch):
    seen = _spy_plot(monkeypatch)
    run_wic(store=wic_store, out=tmp_path, fit="train", eval="dev[80%:]", standardize="batch", echo=False)
    assert "fit train" in seen["title"] and "standardize batch" in seen["title"]
    # dev[80%:] is 5 same-sense pairs of 9: the baseline to beat is 5/9, not 0.5
    assert seen["hlines"] == [(pytest.approx(5 / 9), "majority class (0.56)")]
    doc = json.loads((tmp_path / "wic.json").read_text())
    assert doc["eval_class_balance"] == {"dev[80%:]": {"n_pairs": 9, "positive_rate": 0.555556,
                                                       "majority_baseline": 0.555556}}
    assert doc["fit_positive_rate"] == 0.5
    assert seen["metrics"][0].ci == ("ci95_low", "ci95_high")
    ax = seen["fig"].axes[0]
    assert "static" in [t.get_text() for t in ax.get_xticklabels()]
    assert ax.collections, "no error bars drawn"


def test_wic_plot_draws_each_eval_splits_majority_baseline_in_its_colour(tmp_path, wic_store, monkeypatch):
    seen = _spy_plot(monkeypatch)
    run_wic(store=wic_store, out=tmp_path, eval="test[:9],dev[80%:]", echo=False)
    # test[:9] starts on an odd pair: 4 same-sense pairs of 9, majority 'different' (5/9) as well
    assert seen["hlines"] == [(pytest.approx(5 / 9), "majority class, test[:9] (0.56)", "test[:9]"),
                              (pytest.approx(5 / 9), "majority class, dev[80%:] (0.56)", "dev[80%:]")]
    colours = {line.get_label(): line.get_color() for line in seen["fig"].axes[0].get_lines()}
    assert colours["majority class, test[:9] (0.56)"] == colours["accuracy (test[:9])"]
    assert colours["majority class, dev[80%:] (0.56)"] == colours["accuracy (dev[80%:])"]


def _identical_layer_0_targets(s):
    """As on a RoPE decoder (SmolLM2, Llama) in the prompt variant: the same '"' token everywhere and
    no position added at the input, so every layer-0 target vector is the same, bit for bit."""
    rows = np.flatnonzero(s.tokens.column("is_target").to_numpy())
    s._hidden[0][rows] = s._hidden[0][rows[0]]
    return s


def test_wic_flags_a_layer_whose_target_vectors_are_all_identical_as_constant(tmp_path, monkeypatch):
    seen = _spy_plot(monkeypatch)
    s = _identical_layer_0_targets(make_wic_store(variant="prompt", static_signal=True))
    rows = run_wic(store=s, out=tmp_path, echo=False)
    assert {(r["layer"], r["split"]) for r in rows if r["constant"]} == {(0, "dev"), (0, "test")}
    doc = json.loads((tmp_path / "wic.json").read_text())
    for r in rows:
        if r["constant"]:   # train is 45/45: the tie goes to 'same sense' for every pair
            assert r["accuracy"] == pytest.approx(doc["eval_class_balance"][r["split"]]["positive_rate"])
    assert "identical" in doc["layer_0"] and "constant predictor" in doc["layer_0"]
    assert "only by position" not in doc["layer_0"]
    assert doc["constant_rows"].startswith("layer 0: ")
    assert "layer 0: constant predictor" in seen["note"]


def test_wic_layers_with_varying_target_vectors_are_not_constant(tmp_path):
    rows = run_wic(store=make_wic_store(variant="prompt"), out=tmp_path, echo=False)
    assert not any(r["constant"] for r in rows)
    doc = json.loads((tmp_path / "wic.json").read_text())
    assert "constant_rows" not in doc and "identical" not in doc["layer_0"]


def test_wic_flags_a_row_whose_fit_threshold_predicts_one_class(tmp_path, monkeypatch):
    # The fake store's static row: both sides of every pair are the same word, so every cosine is 1
    # and the threshold lands above them all (vectors differ across pairs: not 'constant'). The
    # layers carry signal: their thresholds split the fit pairs.
    seen = _spy_plot(monkeypatch)
    rows = run_wic(store=make_wic_store(variant="base"), out=tmp_path, echo=False)
    assert {r["layer"] for r in rows if r["one_class"]} == {"static"}
    assert not any(r["constant"] for r in rows)
    doc = json.loads((tmp_path / "wic.json").read_text())
    assert doc["one_class_rows"].startswith("static: the best threshold on the fit split puts every fit pair")
    assert "hollow at static: the fit threshold predicts one class" in seen["note"]
    assert "one_class" in doc["column_glossary"]


def test_wic_constant_rows_are_one_class_and_noted_once(tmp_path):
    s = _identical_layer_0_targets(make_wic_store(variant="prompt", static_signal=True))
    rows = run_wic(store=s, out=tmp_path, echo=False)
    assert all(r["one_class"] for r in rows if r["constant"])
    assert "0" not in json.loads((tmp_path / "wic.json").read_text()).get("one_class_rows", "").split(":")[0]


def test_wic_json_explains_every_column(tmp_path, wic_store):
    run_wic(store=wic_store, out=tmp_path, eval="dev", echo=False)
    doc = json.loads((tmp_path / "wic.json").read_text())
    assert list(doc["column_glossary"]) == doc["columns"]
    assert "fit split" in doc["column_glossary"]["fit_accuracy"]


@pytest.mark.parametrize("kind", ["file", "under_a_file"])
def test_wic_unusable_out_fails_before_reading_layers(tmp_path, kind):
    s = make_wic_store()
    f = tmp_path / "taken"
    f.write_text("x")
    out = f if kind == "file" else f / "sub"
    with pytest.raises(LayerprobeError, match="--out"):
        run_wic(store=s, out=out, eval="dev", echo=False)
    assert s.reads == []


@pytest.mark.parametrize("seed", [-1, 2**32, 10**20, True, 1.5])
def test_wic_check_settings_refuses_a_seed_outside_0_to_2_32_minus_1(seed):
    from jobs.wic import check_settings

    with pytest.raises(LayerprobeError, match=r"seed must be an integer in \[0, 2\*\*32 - 1"):
        check_settings(seed=seed)
    check_settings(seed=0)
    check_settings(seed=2**32 - 1)


@pytest.mark.parametrize("step", [1e-12, 1e-9, 9.9e-7])
def test_wic_threshold_grid_finer_than_1e_6_is_refused_saying_why(tmp_path, wic_store, step):
    from jobs.wic import check_settings

    with pytest.raises(LayerprobeError, match=r"too fine: [\d,]+ thresholds over \[-1, 1\].*at least 1e-06"):
        check_settings(threshold_grid=step)
    with pytest.raises(LayerprobeError, match="too fine"):
        best_threshold(np.array([0.1, 0.9]), np.array([False, True]), step)
    with pytest.raises(LayerprobeError, match="too fine"):
        run_wic(store=wic_store, out=tmp_path / "o", threshold_grid=step, echo=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("step", [float("nan"), float("inf"), -0.1, 0.0, 0, 2.5, True, "0.1"])
def test_wic_threshold_grid_nan_inf_negative_zero_or_not_a_number_is_refused(step):
    from jobs.wic import check_settings

    with pytest.raises(LayerprobeError, match=r"--threshold-grid must be a step in \[1e-06, 2\]"):
        check_settings(threshold_grid=step)


def test_wic_threshold_grid_of_1e_6_runs():
    sims = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    thr, acc = best_threshold(sims, np.array([False, False, False, True, True]), 1e-6)
    assert acc == 1.0 and 0.3 <= thr < 0.8


def test_wic_fit_naming_a_split_twice_is_refused_not_counted_twice(tmp_path, wic_store):
    with pytest.raises(LayerprobeError, match=r"split selector 'train\+train' picks units twice"):
        run_wic(store=wic_store, out=tmp_path / "o", fit="train+train", eval="dev", echo=False)
    rows = run_wic(store=wic_store, out=tmp_path / "ok", fit="train[:50%]+train[50%:]", eval="dev", echo=False)
    doc = json.loads((tmp_path / "ok" / "wic.json").read_text())
    assert doc["n_fit_pairs"] == 90 and {r["split"] for r in rows} == {"dev"}


@pytest.mark.parametrize("evals", ["dev,dev", ["dev", "dev"], ["dev", "dev[:100%]"], "test,dev,test"])
def test_wic_eval_naming_a_selection_twice_is_refused(tmp_path, wic_store, evals):
    with pytest.raises(LayerprobeError, match=r"eval selections name 'dev' |eval selections name 'test' "):
        run_wic(store=wic_store, out=tmp_path / "o", eval=evals, echo=False)
