import csv
import json

from jobs.results import format_table, write_results

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
