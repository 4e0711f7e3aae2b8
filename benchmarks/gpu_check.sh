#!/usr/bin/env bash
# The GPU half of issue 6 in one device call: the GPU tests (tests marked `gpu`: stored vectors vs
# the model run alone on the GPU, float16 cast and range check on the device, write threads), then
# the benchmark on the GPU (MiniLM-sized and GPT-2-sized, random weights), all output under $OUT.
#   here:    benchmarks/gpu_prepare.sh
#   device:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Sizes: ~300k MiniLM tokens (3.2 GB per float32 store) and ~95k GPT-2-sized tokens (3.8 GB), so
# that the forward takes seconds on an H100; override with EXAMPLES (WiC sentences, at most the
# bundled 900), REPEAT_MINILM and REPEAT_GPT2. Rehearsed on a machine without a GPU with
#   DEVICE=cpu EXAMPLES=60 REPEAT_MINILM=1 REPEAT_GPT2=1 PATH=.venv/bin:$PATH OUT=/tmp/x bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/layerprobe-gpu-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true RAY_USAGE_STATS_ENABLED=0
if ! python3 -c "import zarr, pydantic, datasets" 2>/dev/null; then  # the image lacks them: the carried wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
fi
[ -d .whl/minilm-tokenizer ] && export LAYERPROBE_WORDPIECE_DIR=$PWD/.whl/minilm-tokenizer
TOKENIZER=${LAYERPROBE_WORDPIECE_DIR:+--tokenizer $LAYERPROBE_WORDPIECE_DIR}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
    python3 -c "import sys, torch, transformers, pyarrow, zarr, datasets; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'pyarrow', pyarrow.__version__, 'zarr', zarr.__version__, 'datasets', datasets.__version__)"
    echo "cores: $(nproc)"; df -h "$(dirname "$WORK")" | tail -1
} 2>&1 | tee "$OUT/machine.txt"
python3 -c "import datasets" || { echo "gpu_check: datasets does not import beside this pyarrow (see above)"; exit 1; }

timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/pipeline/extract/test_forward_matches_reference.py \
    2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}

bench() {  # timeout, then benchmark arguments
    timeout "$1" python3 -m benchmarks --device "$DEVICE" $TOKENIZER --baselines np_save --batch-tokens 16384 \
        --workdir "$WORK" "${@:2}" 2>&1 | tee -a "$OUT/bench.log"
    rm -rf "$WORK"
    return "${PIPESTATUS[0]}"
}
bench 200 --models minilm-random --examples "${EXAMPLES:-900}" --repeat "${REPEAT_MINILM:-32}" --sections throughput,ceiling \
    --out "$OUT/minilm.json"; minilm_rc=$?
bench 150 --models gpt2-small --gpt2-examples "${EXAMPLES:-900}" --repeat "${REPEAT_GPT2:-10}" --rounds 2 --sections throughput \
    --out "$OUT/gpt2.json"; gpt2_rc=$?
echo "gpu_check: tests rc=$tests_rc, MiniLM-sized benchmark rc=$minilm_rc, GPT-2-sized benchmark rc=$gpt2_rc"
cat "$OUT"/minilm.md "$OUT"/gpt2.md 2>/dev/null
[ "$tests_rc" = 0 ] && [ "$minilm_rc" = 0 ] && [ "$gpt2_rc" = 0 ]
