import numpy as np
import pytest
from fake_store import make_conllu_store, make_wic_store

from jobs.wic import accuracy_at, best_threshold, cosine, global_zscorer, run_wic, zscore_batches
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


def test_best_threshold_all_positive_goes_below_minimum():
    thr, acc = best_threshold(np.array([0.4, 0.5]), np.array([True, True]))
    assert acc == 1.0 and thr < 0.4


def test_global_zscorer_uses_fit_statistics():
    fit = np.array([[0.0, 10.0], [2.0, 10.0]])
    out = global_zscorer(fit)(np.array([[1.0, 10.0], [3.0, 11.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0], [2.0, 1.0]])   # std 0 -> left unscaled


def test_zscore_batches_standardise_each_block_of_pairs_with_its_own_stats():
    a = np.array([[0.0], [100.0]])
    b = np.array([[2.0], [102.0]])
    ea, eb = zscore_batches(a, b, batch_pairs=1)
    np.testing.assert_allclose(ea, [[-1.0], [-1.0]])
    np.testing.assert_allclose(eb, [[1.0], [1.0]])


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
