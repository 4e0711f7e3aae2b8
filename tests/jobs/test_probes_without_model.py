"""Probes need the store only: they run with transformers and ray unimportable and the model's
directory deleted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

BLOCKED_RUN = (
    "import sys; sys.modules['transformers'] = None; sys.modules['ray'] = None; "  # import -> ImportError
    "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def stores_without_model(tiny_bert, tmp_path_factory):
    from pipeline.executors.extract_job import run_extract
    from pipeline.samples import SAMPLES_DIR
    from schemas.job import ExtractSpec

    root = tmp_path_factory.mktemp("no_model")
    model = root / "model"
    shutil.copytree(tiny_bert, model)
    wic, ud = root / "wic.zarr", root / "ud.zarr"
    run_extract(ExtractSpec(model=str(model), data=str(SAMPLES_DIR / "wic"), out=str(wic)),
                executor="local", progress=False)
    run_extract(ExtractSpec(model=str(model), data=str(SAMPLES_DIR / "ud-english-ewt"), out=str(ud), limit=80),
                executor="local", progress=False)
    shutil.rmtree(model)
    return root, wic, ud


@pytest.mark.parametrize("probe, store, args", [
    ("wic", "wic", ["--fit", "train", "--eval", "dev"]),
    ("polar", "ud", ["--fit", "dev[:75%]", "--eval", "dev[75%:]", "--epochs", "5", "--rank", "16"]),
    ("linear", "ud", ["--label", "upos", "--fit", "dev[:75%]", "--eval", "dev[75%:]", "--control"]),
])
def test_probe_runs_with_transformers_unimportable_and_the_model_deleted(stores_without_model, probe, store, args):
    root, wic, ud = stores_without_model
    assert not (root / "model").exists()
    out = root / f"out-{probe}"
    cmd = [sys.executable, "-c", BLOCKED_RUN, "probe", probe, "--store", str(wic if store == "wic" else ud),
           "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / f"{probe}.json").read_text())
    layers = {r["layer"] for r in doc["results"]}
    assert {0, 1, 2, 3} <= layers  # every stored layer of the tiny BERT has a result
    assert (out / f"{probe}.csv").read_text().startswith("layer,split")
    assert (out / f"{probe}.png").stat().st_size > 1000
