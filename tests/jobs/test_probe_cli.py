"""The `probe` CLI end to end on real on-disk stores written with pipeline.store.writer."""

import argparse
import csv

import pytest
from fake_store import make_conllu_store, make_wic_store, write_real_store

from jobs.cli import add_probe_parsers, main


@pytest.fixture(scope="module")
def real_wic(tmp_path_factory):
    return write_real_store(make_wic_store(variant="repeat"), str(tmp_path_factory.mktemp("s") / "wic.zarr"))


@pytest.fixture(scope="module")
def real_ud(tmp_path_factory):
    fake = make_conllu_store(splits=(("dev", 30),), n_layers=2, d=16, max_len=8)
    return write_real_store(fake, str(tmp_path_factory.mktemp("s") / "ud.zarr"), dtype="float16")


def test_add_probe_parsers_wires_three_subcommands_with_defaults():
    parser = argparse.ArgumentParser()
    add_probe_parsers(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["probe", "wic", "--store", "S", "--out", "D"])
    assert (a.fit, a.eval, a.standardize, a.threshold_grid, a.seed) == ("train", None, "global", None, 0)
    a = parser.parse_args(["probe", "polar", "--store", "S", "--out", "D"])
    assert (a.fit, a.eval) == ("dev", "test") and a.rank > 0 and a.beta_root >= 0   # polar defaults: test_polar
    a = parser.parse_args(["probe", "linear", "--store", "S", "--label", "upos", "--control", "--out", "D"])
    assert a.control and a.label == "upos" and callable(a.func)


def test_wic_cli_on_a_real_store_writes_csv_json_png(tmp_path, real_wic, capsys):
    assert main(["probe", "wic", "--store", real_wic, "--standardize", "batch", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "wic.csv")))
    assert {r["split"] for r in rows} == {"dev", "test"} and rows[0]["layer"] == "static"
    assert float([r for r in rows if r["layer"] == "3"][0]["accuracy"]) > 0.9
    assert (tmp_path / "wic.json").exists() and (tmp_path / "wic.png").exists()
    assert "accuracy" in capsys.readouterr().out


def test_linear_and_polar_cli_on_a_dev_only_float16_store(tmp_path, real_ud):
    assert main(["probe", "linear", "--store", real_ud, "--label", "upos", "--fit", "dev[:80%]",
                 "--eval", "dev[80%:]", "--control", "--out", str(tmp_path)]) == 0
    assert main(["probe", "polar", "--store", real_ud, "--fit", "dev[:80%]", "--eval", "dev[80%:]",
                 "--rank", "8", "--epochs", "3", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "linear.csv").exists() and (tmp_path / "polar.png").exists()


def test_cli_reports_user_errors_without_traceback(tmp_path, real_ud, capsys):
    assert main(["probe", "linear", "--store", real_ud, "--label", "upos", "--fit", "train",
                 "--out", str(tmp_path)]) == 2
    assert "unknown split 'train'" in capsys.readouterr().err
    # the defaults (--fit dev --eval test) on a dev-only store: what to pass instead
    assert main(["probe", "polar", "--store", real_ud, "--out", str(tmp_path)]) == 2
    assert "no 'test' split to evaluate on; the store has: dev; pass e.g. --fit 'dev[:80%]'" in capsys.readouterr().err
    assert main(["probe", "wic", "--store", str(tmp_path / "missing.zarr"), "--out", str(tmp_path)]) == 2


def test_a_refused_probe_leaves_no_empty_out_folder_of_its_own(tmp_path, real_ud, capsys):
    new = tmp_path / "results" / "linear"
    assert main(["probe", "linear", "--store", real_ud, "--label", "upos", "--fit", "train",
                 "--out", str(new)]) == 2
    assert not new.exists()
    kept = tmp_path / "mine"  # a folder the user made stays, even empty
    kept.mkdir()
    assert main(["probe", "linear", "--store", real_ud, "--label", "upos", "--fit", "train",
                 "--out", str(kept)]) == 2
    assert kept.is_dir()


@pytest.mark.parametrize("probe, extra", [("wic", []), ("linear", ["--label", "upos"]),
                                          ("polar", ["--epochs", "1", "--rank", "4"])])
def test_cli_out_that_is_a_file_is_one_clear_error_for_every_probe(tmp_path, real_wic, real_ud, capsys,
                                                                   probe, extra):
    f = tmp_path / "taken"
    f.write_text("x")
    store = real_wic if probe == "wic" else real_ud
    assert main(["probe", probe, "--store", store, *extra, "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a folder" in err and "Traceback" not in err


def test_cli_refuses_a_leaking_eval_and_a_non_categorical_label(tmp_path, real_wic, real_ud, capsys):
    assert main(["probe", "wic", "--store", real_wic, "--fit", "dev", "--eval", "dev", "--out", str(tmp_path)]) == 2
    assert "shares 45 of its 45 pairs with fit selection 'dev'" in capsys.readouterr().err
    assert main(["probe", "linear", "--store", real_ud, "--label", "sent_id", "--fit", "dev[:50%]",
                 "--eval", "dev[50%:]", "--out", str(tmp_path)]) == 2
    assert "not categorical" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-5", "-1", str(2**32), "99999999999999999999"])
@pytest.mark.parametrize("probe, extra", [
    ("wic", ["--fit", "train", "--eval", "dev"]),
    ("polar", ["--fit", "dev[:50%]", "--eval", "dev[50%:]", "--epochs", "1", "--rank", "4"]),
    ("linear", ["--label", "upos", "--fit", "dev[:50%]", "--eval", "dev[50%:]"]),
])
def test_cli_seed_outside_0_to_2_32_minus_1_is_one_clear_error_for_every_probe(tmp_path, real_wic, real_ud, capsys,
                                                                              probe, extra, seed):
    store = real_wic if probe == "wic" else real_ud
    assert main(["probe", probe, "--store", store, *extra, "--seed", seed, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"seed must be an integer in [0, 2**32 - 1 = 4294967295], got {seed}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_largest_seed_runs_polar_and_linear(tmp_path, real_ud):
    seed = str(2**32 - 1)
    assert main(["probe", "polar", "--store", real_ud, "--fit", "dev[:50%]", "--eval", "dev[50%:]", "--epochs", "1",
                 "--rank", "4", "--seed", seed, "--out", str(tmp_path / "p")]) == 0
    assert main(["probe", "linear", "--store", real_ud, "--label", "upos", "--fit", "dev[:50%]", "--eval",
                 "dev[50%:]", "--seed", seed, "--out", str(tmp_path / "l")]) == 0


def test_cli_too_fine_threshold_grid_is_refused_before_allocating(tmp_path, real_wic, capsys):
    assert main(["probe", "wic", "--store", real_wic, "--threshold-grid", "1e-12", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--threshold-grid 1e-12 is too fine: 2,000,000,000,000 thresholds" in err and "at least 1e-06" in err
    assert "Traceback" not in err


def test_cli_duplicated_fit_or_eval_selection_is_refused(tmp_path, real_wic, capsys):
    assert main(["probe", "wic", "--store", real_wic, "--fit", "train+train", "--out", str(tmp_path / "o")]) == 2
    assert "split selector 'train+train' picks units twice (it names 'train' twice)" in capsys.readouterr().err
    assert main(["probe", "wic", "--store", real_wic, "--eval", "dev,dev", "--out", str(tmp_path / "o")]) == 2
    assert "eval selections name 'dev' twice" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_linear_on_a_tiny_fit_selection_says_the_fit_is_too_small_not_the_label(tmp_path, real_ud, capsys):
    assert main(["probe", "linear", "--store", real_ud, "--label", "upos", "--fit", "dev[:1]", "--eval", "dev[1:2]",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "the fit selection 'dev[:1]' has only" in err and "select more for the fit" in err
    assert "not categorical" not in err
