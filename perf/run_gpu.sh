#!/usr/bin/env bash
# Every GPU test and benchmark of r1core in one command, on a machine that has torch and
# triton but no network:
#
#     bash perf/run_gpu.sh            # tests, then every perf/bench_*.py
#     bash perf/run_gpu.sh tests      # only the tests
#     bash perf/run_gpu.sh bench      # only the benchmarks
#
# r1core is installed without dependencies (editable, so kernels/ resolves as
# r1core.kernels); wheels found in .whl/ (e.g. liger-kernel, fetched elsewhere with
# `pip download --no-deps liger-kernel -d .whl`) are installed without an index so the
# benchmarks can put them side by side. Logs and perf/results/ files are copied to $OUT
# when it is set. Every step runs even if an earlier one fails; the exit status is
# non-zero if any failed. STEP_TIMEOUT (seconds, default 540) bounds each step.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python}
WHAT=${1:-all}
STEP_TIMEOUT=${STEP_TIMEOUT:-540}
LOGS=${LOGS:-$REPO/perf/results/logs}
mkdir -p "$LOGS"
status=0

step() {  # step NAME COMMAND...: run with a timeout, log to $LOGS/NAME.log
    local name=$1
    shift
    echo "=== $name: $*"
    timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "=== $name failed (exit $rc)"; status=1; }
}

# --- install -------------------------------------------------------------------------------
if ! "$PY" -c "import r1core.kernels" 2>/dev/null; then
    if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . ; then
        # No setuptools/wheel to build with: map kernels/ into the package by a link.
        echo "pip install failed; linking kernels/ as r1core/kernels and using PYTHONPATH"
        [ -e r1core/kernels ] || { ln -s ../kernels r1core/kernels && trap 'rm -f "$REPO/r1core/kernels"' EXIT; }
        export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-deps --no-index .whl/*.whl || echo "warning: some wheels in .whl/ did not install"
fi
"$PY" - <<'EOF' | tee "$LOGS/environment.log"
import torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
import r1core.ops
print("fused_logprobs backends on cuda:", r1core.ops.available("fused_logprobs", "cuda"))
try:
    import liger_kernel  # noqa: F401
    print("liger_kernel available")
except ImportError:
    print("liger_kernel not installed (its benchmark rows are skipped)")
EOF

# --- tests: everything marked gpu, and the op tests (which run every backend on cuda) ------
if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
    step tests-ops "$PY" -m pytest -q -ra -p no:cacheprovider tests/ops
    step tests-gpu "$PY" -m pytest -q -ra -p no:cacheprovider -m gpu --continue-on-collection-errors tests
fi

# --- benchmarks: every perf/bench_*.py with its CUDA defaults ------------------------------
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
    for script in perf/bench_*.py; do
        module=perf.$(basename "$script" .py)
        step "$(basename "$script" .py)" "$PY" -m "$module"
    done
fi

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/results"
    cp -r perf/results/. "$OUT/results/"
    echo "copied perf/results to $OUT/results"
fi
exit $status
