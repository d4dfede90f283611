"""Every GPU test and benchmark of r1core in one call with one time budget (``make bench-gpu``).

    python3 -m perf.run_gpu [--budget 420] [--dry-run] [--rehearsal] [--only STEP ...]

Made for a lent GPU machine with minutes of device time, no network and no venv: torch,
triton and nvcc as installed there, r1core from this checkout. Every step runs as a
subprocess under a timeout of ``min(its own budget, the time left minus what the later
steps need at least)``, so the whole call ends within ``--budget`` seconds (plus the few
seconds of the summary); a step that fails or times out is reported and the next one runs.

Steps, in order (``--dry-run`` prints them with their budgets):

1. ``environment``: device, peaks, versions, which peers and toolchain pieces are present.
2. ``install``: r1core from this checkout without its extension (``pip -e``, no index), and
   every wheel carried in ``.whl/`` (Liger-Kernel, QuACK, megatron-core: the machine cannot
   download them) into a private target folder.
3. ``build-extension``: ``setup.py build_ext --inplace`` for sm_90a with ninja, started in
   the background; the steps after it that need the ``cuda`` backend wait for it.
4. ``op-tests``: the op tests' CUDA cases and the ``gpu``-marked ones, with a fixed small
   autotune set (``R1CORE_AUTOTUNE=fixed``).
5. ``extension-tests``: the compiled ``cuda`` backend's tests, once the build is done.
6. ``bench-logprobs-4096`` / ``bench-logprobs-16384``: fused_logprobs at N=4096 and 16384,
   H=4096, V=151936, bf16, inputs made on the device; every r1core backend and Triton
   variant, naive torch, Liger-Kernel and QuACK where they import.
7. ``bench-grpo-loss``: fused_grpo_loss at N=16384.
8. ``bench-advantages``: the public ``group_advantages`` at B=8192.
9. ``bench-policy-step``: a bf16 train step of the Megatron-Core policy on a random
   Qwen3-0.6B-shaped model (tokens/s, MFU), skipped cleanly without megatron-core.
10. ``summary``: one table (TF/s, % of the device's peak, extra MiB) of every benchmark row
    in ``perf/results/bench_gpu_<device>_<date>.{json,md}``; with ``$OUT`` set, the results
    and logs are copied there.

``--rehearsal`` runs every step's logic on the CPU at tiny shapes, Triton kernels in the
interpreter (``tests/perf/test_run_gpu.py`` runs it in CI).

Peers on a machine without network: put their wheels in ``.whl/`` (ignored by git) on a
machine with one, for that machine's Python, e.g.

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
        liger-kernel==0.8.5 megatron-core==0.16.1

Liger-Kernel needs nothing the GPU image lacks. megatron-core 0.16.1 adds its own small
dependencies (check ``Requires-Dist`` in the wheel). QuACK (quack-kernels) also needs
nvidia-cutlass-dsl and its dependencies: check their size against what a lent machine can
receive (64 MiB of tree) before carrying them; without them the QuACK rows are skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("R1CORE_RESULTS_DIR") or REPO / "perf" / "results")  # as perf.harness
SUMMARY_RESERVE_S = 8.0  # kept back for the summary and the copy to $OUT


@dataclass
class Step:
    """One step: ``command(context)`` gives the argv to run (None: nothing to run, with the
    reason in ``context.skipped``), ``budget_s`` its own limit, ``min_s`` what it needs at
    least to be worth starting."""

    name: str
    budget_s: float
    min_s: float
    what: str
    command: Callable[["Context"], list[str] | None]
    background: bool = False
    waits_for: str | None = None


@dataclass
class Context:
    rehearsal: bool
    deadline: float
    logs: Path
    step_time_scale: float = 1.0
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    step_env: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    background: dict[str, subprocess.Popen] = field(default_factory=dict)
    outcomes: list[dict] = field(default_factory=list)
    result_files: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.deadline - time.monotonic()


# --- the steps' commands --------------------------------------------------------------------


def _python(ctx: Context, *args: str) -> list[str]:
    return [ctx.python, *args]


def _environment(ctx: Context) -> list[str]:
    return _python(ctx, "-m", "perf.gpu_environment", "--json", str(ctx.logs / "environment.json"))


def _install(ctx: Context) -> list[str] | None:
    wheels = sorted(str(p) for p in (REPO / ".whl").glob("*.whl"))
    site = ctx.logs / "site"
    script = [
        "set -u",
        # The ops from this checkout: an editable install without the extension (built next).
        f"if ! {ctx.python} -c 'import r1core.kernels' 2>/dev/null; then "
        f"R1CORE_SKIP_EXTENSION=1 {ctx.python} -m pip install -q --no-deps --no-build-isolation --no-index -e {REPO} "
        f"|| {{ echo 'pip -e failed: using the checkout on PYTHONPATH'; "
        f"[ -e {REPO}/r1core/kernels ] || ln -s ../kernels {REPO}/r1core/kernels; }}; fi",
        f"{ctx.python} -c 'import r1core.kernels, r1core.ops; print(\"r1core from\", r1core.ops.__file__)'",
    ]
    if wheels and not ctx.rehearsal:
        script.append(f"{ctx.python} -m pip install -q --no-deps --no-index --no-compile --target {site} " + " ".join(wheels)
                      + " || echo 'warning: some wheels in .whl/ did not install'")
    elif wheels:
        script.append("echo 'rehearsal: would install " + " ".join(Path(w).name for w in wheels) + f" into {site}'")
    else:
        script.append("echo 'no wheels in .whl/: Liger-Kernel, QuACK and megatron-core rows run only where installed'")
    return ["bash", "-c", "\n".join(script)]


def _build_extension(ctx: Context) -> list[str] | None:
    env = ctx.step_env.setdefault("build-extension", {})
    env["R1CORE_CUDA_ARCHS"] = os.environ.get("R1CORE_CUDA_ARCHS", "9.0a")
    if ctx.rehearsal:
        # The CPU venv already holds its build; rehearse the launch and the wait, not g++.
        env["R1CORE_SKIP_EXTENSION"] = "1"
    if shutil.which("ninja") is None and not ctx.rehearsal:
        print("warning: ninja is missing: the extension compiles one file at a time")
    env["MAX_JOBS"] = os.environ.get("MAX_JOBS", str(os.cpu_count() or 4))
    return _python(ctx, "setup.py", "-q", "build_ext", "--inplace")


def _pytest(ctx: Context, *args: str) -> list[str]:
    return _python(ctx, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "-o", "addopts=", *args)


def _op_tests(ctx: Context) -> list[str]:
    if ctx.rehearsal:
        # Only the selection logic is rehearsed: without CUDA it selects gpu-marked tests,
        # which skip; the CPU cases run in CI proper.
        return _pytest(ctx, "tests/ops/test_backend.py", "tests/ops/test_logprobs_gpu.py", "-k", "cuda or gpu or reference")
    return _pytest(ctx, "tests/ops", "tests/kernels", "-m", "not slow and not distributed", "-k", "cuda or gpu")


def _extension_tests(ctx: Context) -> list[str]:
    if ctx.rehearsal:
        return _pytest(ctx, "tests/csrc/test_cuda_ops.py")
    return _pytest(ctx, "tests/csrc", "-m", "not slow", "-k", "cuda or gpu")


def _shape_args(ctx: Context, tokens: int) -> list[str]:
    if ctx.rehearsal:
        return ["--tokens", str(max(8, tokens // 1024)), "--hidden", "32", "--vocab", "300", "--dtype", "fp32", "--reps", "1"]
    return ["--tokens", str(tokens), "--hidden", "4096", "--vocab", "151936", "--dtype", "bf16"]


def _bench_logprobs(tokens: int) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        return _python(ctx, "-m", "perf.bench_fused_logprobs", *_shape_args(ctx, tokens), "--no-compile", "--entropy",
                       "--result-name", f"fused_logprobs_n{tokens}")

    return command


def _bench_grpo_loss(ctx: Context) -> list[str]:
    if ctx.rehearsal:
        shape = ["--batch", "2", "--length", "8", "--hidden", "32", "--vocab", "300", "--dtype", "fp32", "--reps", "1"]
    else:
        shape = ["--batch", "64", "--length", "256", "--hidden", "4096", "--vocab", "151936", "--dtype", "bf16"]
    return _python(ctx, "-m", "perf.bench_fused_loss", *shape, "--no-compile")


def _bench_advantages(ctx: Context) -> list[str]:
    size = ["--batch", "64", "--reps", "2"] if ctx.rehearsal else ["--batch", "8192"]
    size.append("--no-compile")
    return _python(ctx, "-m", "perf.bench_group_advantages", *size)


def _bench_policy_step(ctx: Context) -> list[str] | None:
    return _python(ctx, "-m", "perf.bench_policy_step", *(["--tiny"] if ctx.rehearsal else []))


STEPS = [
    Step("environment", 20, 5, "device, peaks, versions, peers present", _environment),
    Step("install", 60, 10, "r1core -e without extension; wheels from .whl/", _install),
    Step("build-extension", 300, 30, "r1core._C for sm_90a with ninja", _build_extension, background=True),
    Step("op-tests", 120, 30, "op tests: CUDA cases and gpu-marked, fixed autotune set", _op_tests),
    Step("bench-advantages", 25, 8, "group_advantages public function, B=8192", _bench_advantages),
    Step("bench-logprobs-4096", 45, 15, "fused_logprobs N=4096 H=4096 V=151936 bf16", _bench_logprobs(4096)),
    Step("extension-tests", 45, 10, "cuda backend tests", _extension_tests, waits_for="build-extension"),
    Step("bench-logprobs-16384", 70, 20, "fused_logprobs N=16384 H=4096 V=151936 bf16", _bench_logprobs(16384)),
    Step("bench-grpo-loss", 45, 15, "fused_grpo_loss N=16384 (64 x 256) bf16", _bench_grpo_loss),
    Step("bench-policy-step", 60, 5, "Megatron-Core policy bf16 train step, Qwen3-0.6B shape", _bench_policy_step),
]


# --- running ----------------------------------------------------------------------------------


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _timeout_for(step: Step, ctx: Context, remaining_steps: list[Step]) -> float:
    """The step's own budget, bounded by the time left minus the least the later steps need."""
    later = sum(s.min_s for s in remaining_steps if not s.background)
    return max(0.0, min(step.budget_s * ctx.step_time_scale, ctx.left() - SUMMARY_RESERVE_S - later))


def _record(ctx: Context, step: Step, status: str, seconds: float, limit: float, note: str = "") -> None:
    ctx.outcomes.append({"step": step.name, "status": status, "seconds": round(seconds, 1), "limit_s": round(limit, 1), "note": note})
    print(f"=== {step.name}: {status} in {seconds:.1f} s (limit {limit:.0f} s){' - ' + note if note else ''}", flush=True)


def _start(step: Step, ctx: Context, limit: float) -> subprocess.Popen | None:
    argv = step.command(ctx)
    if argv is None:
        return None
    log = open(ctx.logs / f"{step.name}.log", "w")
    print(f"=== {step.name} (limit {limit:.0f} s): {' '.join(argv)}", flush=True)
    env = dict(os.environ, **ctx.env, **ctx.step_env.get(step.name, {}))
    # New session: a timeout kills the step's whole process tree (pytest workers, nvcc).
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(process: subprocess.Popen, limit: float) -> tuple[str, float]:
    start = time.monotonic()
    try:
        code = process.wait(timeout=max(limit, 0.1))
    except subprocess.TimeoutExpired:
        _kill(process)
        return "timed out", time.monotonic() - start
    return ("ok" if code == 0 else f"failed (exit {code})"), time.monotonic() - start


def run(steps: list[Step], ctx: Context) -> int:
    failures = 0
    for index, step in enumerate(steps):
        later = steps[index + 1 :]
        if step.waits_for and step.waits_for in ctx.background:
            process, started = ctx.background.pop(step.waits_for)
            limit = _timeout_for(step, ctx, later)
            status, seconds = _wait(process, limit)
            _record(ctx, next(s for s in STEPS if s.name == step.waits_for), status, time.monotonic() - started, limit, "waited for")
            if status != "ok":
                failures += 1
                _record(ctx, step, "skipped", 0.0, 0.0, f"{step.waits_for} {status}")
                continue
        limit = _timeout_for(step, ctx, later)
        if limit < step.min_s:
            _record(ctx, step, "skipped", 0.0, limit, "not enough time left")
            continue
        start = time.monotonic()
        process = _start(step, ctx, limit)
        if process is None:
            _record(ctx, step, "skipped", 0.0, limit, ctx.skipped.get(step.name, ""))
            continue
        if step.background:
            ctx.background[step.name] = (process, start)
            print(f"=== {step.name}: running in the background", flush=True)
            continue
        status, seconds = _wait(process, limit)
        _record(ctx, step, status, seconds, limit)
        failures += status != "ok"
    for name, (process, started) in ctx.background.items():  # a background step no one waited for
        status, seconds = _wait(process, max(0.0, ctx.left() - SUMMARY_RESERVE_S))
        _record(ctx, next(s for s in STEPS if s.name == name), status, time.monotonic() - started, 0.0)
        failures += status != "ok"
    return failures


def plan(steps: list[Step], budget: float) -> str:
    """The plan as ``--dry-run`` prints it: each step with its own budget and the timeout it
    would get if every earlier step used all of its own."""
    lines = [f"bench-gpu plan: total budget {budget:.0f} s ({SUMMARY_RESERVE_S:.0f} s kept for the summary)", ""]
    lines.append(f"{'step':22s} {'budget s':>8s} {'min s':>6s} {'worst-case limit s':>18s}  what")
    elapsed = 0.0
    for index, step in enumerate(steps):
        later = sum(s.min_s for s in steps[index + 1 :] if not s.background)
        limit = max(0.0, min(step.budget_s, budget - elapsed - SUMMARY_RESERVE_S - later))
        mode = " (background)" if step.background else (f" (waits for {step.waits_for})" if step.waits_for else "")
        lines.append(f"{step.name:22s} {step.budget_s:8.0f} {step.min_s:6.0f} {limit:18.0f}  {step.what}{mode}")
        if not step.background:
            elapsed += limit
    lines.append(f"{'summary':22s} {SUMMARY_RESERVE_S:8.0f} {'':6s} {'':18s}  one table of every benchmark row")
    return "\n".join(lines)


def summarise(ctx: Context, started: dt.datetime) -> Path:
    """Collect the benchmark rows written during this run into one table."""
    from perf.harness import peak_tflops_for

    rows, environment = [], {}
    for path in sorted(RESULTS.glob("*.json")):
        if path.stat().st_mtime < started.timestamp() or path.name.startswith("bench_gpu_"):
            continue
        payload = json.loads(path.read_text())
        environment = payload.get("environment", environment)
        for row in payload.get("results", []):
            rows.append({"op": payload.get("op"), "shape": payload.get("meta", {}).get("shape", ""), **row})
        ctx.result_files.append(path.name)
    device = environment.get("device", "cpu")
    peak = peak_tflops_for(device)
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-") if not ctx.rehearsal else "rehearsal-cpu"
    stem = f"bench_gpu_{slug}_{started.date().isoformat()}"
    payload = {"steps": ctx.outcomes, "environment": environment, "peak_tflops": peak, "rows": rows, "files": ctx.result_files}
    json_path = RESULTS / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    lines = [f"# make bench-gpu on {device}", "", f"started {started.isoformat(timespec='seconds')}; peak used for %: "
             f"{peak if peak else 'unknown'} TF/s bf16 dense", "", "| step | status | s | limit s | note |", "|---|---|---|---|---|"]
    lines += [f"| {o['step']} | {o['status']} | {o['seconds']} | {o['limit_s']} | {o['note']} |" for o in ctx.outcomes]
    lines += ["", "| op | shape | case | impl | ms | TF/s | % of peak | extra MiB | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        percent = None if not (peak and r.get("tflops")) else 100 * r["tflops"] / peak
        lines.append(f"| {r['op']} | {r['shape']} | {r['case']} | {r['impl']} | {fmt(r.get('ms'), '.3f')} | "
                     f"{fmt(r.get('tflops'), '.1f')} | {fmt(percent, '.1f')} | {fmt(r.get('extra_memory_mib'), '.0f')} | {r.get('note', '')} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return json_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 420)), help="seconds for everything")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and budgets; run nothing")
    parser.add_argument("--rehearsal", action="store_true", help="every step on the CPU at tiny shapes (Triton interpreter)")
    parser.add_argument("--step-time-scale", type=float, default=1.0,
                        help="multiply every step's own budget (a rehearsal on a busy CPU checks the steps' "
                             "logic, not their speed); --budget still bounds the whole call")
    parser.add_argument("--only", nargs="*", default=None, help="run only these steps (the summary always runs)")
    args = parser.parse_args(argv)
    steps = [s for s in STEPS if args.only is None or s.name in args.only]
    unknown = set(args.only or ()) - {s.name for s in STEPS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; valid: {', '.join(s.name for s in STEPS)}")
    if args.dry_run:
        print(plan(steps, args.budget))
        return 0
    started = dt.datetime.now(dt.timezone.utc)
    logs = RESULTS / "logs" / ("rehearsal" if args.rehearsal else "bench-gpu")
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(rehearsal=args.rehearsal, deadline=time.monotonic() + args.budget, logs=logs,
                  step_time_scale=args.step_time_scale)
    ctx.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(logs / "site"), os.environ.get("PYTHONPATH")]))
    ctx.env["PYTHONUNBUFFERED"] = "1"
    ctx.env.setdefault("HF_HUB_OFFLINE", "1")
    ctx.env["R1CORE_AUTOTUNE"] = "fixed"  # one tile configuration per kernel: no tuning runs
    if args.rehearsal:
        ctx.env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    print(plan(steps, args.budget), flush=True)
    failures = run(steps, ctx)
    summary = summarise(ctx, started)
    print(f"summary: {summary} and {summary.with_suffix('.md')}")
    out = os.environ.get("OUT")
    if out and not args.rehearsal:
        # The device tool returns at most 8 files two folders deep: one archive of everything.
        archive = shutil.make_archive(str(Path(out) / "bench-gpu"), "gztar", RESULTS.parent, RESULTS.name)
        shutil.copy(summary.with_suffix(".md"), out)
        print(f"copied results and logs to {archive}")
    print(f"{failures} step(s) failed or timed out")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
