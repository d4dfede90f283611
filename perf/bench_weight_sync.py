"""Benchmark: trainer -> vLLM weight sync on CPU, against vLLM's own in-process reload.

For a random model (``--model tiny`` or ``--model 0.5b``, Qwen2.5-0.5B's shapes) it
starts one in-process engine and measures, alternating the two so that both see the
same machine load:

* ``r1core``: ``VLLMRollout.sync_weights`` from a transformers model (bucketed through
  the shared-memory backend, coverage check, tied-head refresh, prefix-cache reset);
* ``vllm_reload``: vLLM's own ``reload_weights(weights_iterator=...)`` over the same
  state dict, already in memory (no staging, no checks; the floor to compare with).

and, for each ``--bucket-mib``, the peak extra resident memory of the process during a
sync (sampled every 2 ms from /proc/self/statm, the staging file's pages included),
above the resident memory just before it, and the size of the staging buffer. The
engine runs in-process, so the one RSS covers both the trainer and the engine worker
(the worker uses the trainer's mapping of the staging file, so its pages count once).
RSS also holds memory glibc keeps after ``free``: with buckets just below the MLP
weights' size (16 MiB for 0.5B) the reassembled ~17 MiB tensors raise glibc's dynamic
mmap threshold and land on the heap, which is not returned; run with
``MALLOC_MMAP_THRESHOLD_=1048576`` to see the engine's own peak without that effect.

Usage:
    python perf/bench_weight_sync.py --model tiny --repeats 10
    python perf/bench_weight_sync.py --model 0.5b --repeats 3 --bucket-mib 16 64 256 1024
Writes perf/results/weight_sync_<model>_cpu_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import threading
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402

MODEL_KINDS = {"tiny": "qwen2", "tiny_tied": "qwen2_tied", "0.5b": "qwen2_0.5b"}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRss:
    """Samples this process's RSS in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def vllm_reload(engine, model) -> None:
    """vLLM's own in-place reload from an in-memory iterator (in-process engines only)."""
    from r1core.rollout import ModuleWeightSource

    weights = ModuleWeightSource(model).iter_hf_weights()
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
    engine.llm.reset_prefix_cache()


def versions() -> dict[str, str]:
    import transformers
    import vllm

    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "vllm": vllm.__version__, "transformers": transformers.__version__,
        "cpu": cpu, "num_cpus": str(os.cpu_count()),
        "load_average_1min_at_start": f"{os.getloadavg()[0]:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_KINDS), default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bucket-mib", type=float, nargs="+", default=[0.0625, 0.25, 1, 16])
    parser.add_argument("--timing-bucket-mib", type=float, default=256)
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    from r1core.rollout import ModuleWeightSource, VLLMRollout
    from r1core.testing.random_models import perturb_, save_random_model

    info = versions()
    kind = MODEL_KINDS[args.model]
    with tempfile.TemporaryDirectory(prefix="r1core-bench-") as tmp:
        model = save_random_model(tmp, kind, seed=0)
        num_params = sum(p.numel() for p in model.parameters())
        largest = max(t.numel() * t.element_size() for t in model.state_dict().values())
        engine = VLLMRollout(tmp, max_model_len=256, dtype="float32",
                             bucket_bytes=int(args.timing_bucket_mib * 2**20))
    source = ModuleWeightSource(model)
    prompt = [[3, 5, 7, 9, 11, 13, 15, 17]]

    # Warm-up: the first sync creates the staging file and the worker's mapping.
    perturb_(model, seed=100)
    first = engine.sync_weights(source)
    ours, theirs = [], []
    for repeat in range(args.repeats):
        perturb_(model, seed=200 + repeat)
        start = time.perf_counter()
        engine.sync_weights(source)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        vllm_reload(engine, model)
        theirs.append(time.perf_counter() - start)
    # A last sync of ours so the engine ends on correct weights (vLLM's reload leaves a
    # tied LM head stale on CPU), then one generate as a smoke check.
    engine.sync_weights(source)
    engine.generate(prompt, n=1, max_tokens=4, temperature=0.0)

    memory = []
    for bucket_mib in args.bucket_mib:
        engine.set_bucket_bytes(int(bucket_mib * 2**20))
        perturb_(model, seed=300)
        before = rss_bytes()
        with PeakRss() as peak:
            stats = engine.sync_weights(source)
        summary = engine.llm.collective_rpc("r1core_last_update_summary")[0]
        memory.append({"bucket_mib": bucket_mib, "num_buckets": stats.num_buckets,
                       "peak_extra_mib": (peak.peak - before) / 2**20,
                       "staging_mib": stats.staging_bytes / 2**20,
                       "written_in_place": summary["written_in_place"],
                       "num_reassembled": len(summary["reassembled"]),
                       "detached_mib": summary["detached_bytes"] / 2**20,
                       "sync_s": stats.seconds})
        # Drop the staging file between sizes so each measurement pays for its own.
        engine.set_bucket_bytes(int(bucket_mib * 2**20))
    before = rss_bytes()
    with PeakRss() as peak:
        vllm_reload(engine, model)
    vllm_reload_extra_mib = (peak.peak - before) / 2**20
    engine.close()

    median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
    result = {
        "what": "weight sync trainer -> vLLM engine (in-process), CPU, fp32",
        "model": kind, "num_params": num_params,
        # Unique parameters: a tied LM head is counted once.
        "model_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "largest_tensor_mib": largest / 2**20,
        "timing_bucket_mib": args.timing_bucket_mib, "repeats": args.repeats,
        "first_sync_s": first.seconds,
        "r1core_sync_s": ours, "vllm_reload_s": theirs,
        "r1core_sync_median_s": median_ours, "vllm_reload_median_s": median_theirs,
        "ratio_r1core_over_vllm_reload": median_ours / median_theirs,
        "memory_by_bucket": memory,
        "vllm_reload_peak_extra_mib": vllm_reload_extra_mib,
        "load_average_1min_at_end": f"{os.getloadavg()[0]:.1f}",
        "versions": info,
        "command": f"python perf/bench_weight_sync.py --model {args.model} --repeats "
                   f"{args.repeats} --bucket-mib {' '.join(map(str, args.bucket_mib))}",
    }
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir,
                        f"weight_sync_{args.model}_cpu_{datetime.date.today().isoformat()}")
    with open(stem + ".json", "w") as handle:
        json.dump(result, handle, indent=2)
    with open(stem + ".md", "w") as handle:
        handle.write(render_markdown(result))
    print(render_markdown(result))


def render_markdown(r: dict) -> str:
    v = r["versions"]
    lines = [
        f"# Weight sync, {r['model']} ({r['num_params'] / 1e6:.1f}M params, "
        f"{r['model_mib']:.0f} MiB fp32), CPU",
        "",
        f"`{r['command']}` -- {v['cpu']}, {v['num_cpus']} CPUs, python {v['python']}, "
        f"torch {v['torch']}, vllm {v['vllm']}, transformers {v['transformers']}. "
        f"Machine shared: 1-min load average {v['load_average_1min_at_start']} at start, "
        f"{r['load_average_1min_at_end']} at end; the two methods alternate, so the ratio "
        "is fairer than the absolute times.",
        "",
        "| | median (s) | all runs (s) |",
        "|---|---|---|",
        f"| r1core `sync_weights` ({r['timing_bucket_mib']:g} MiB buckets) | "
        f"{r['r1core_sync_median_s']:.3f} | "
        f"{', '.join(f'{x:.3f}' for x in r['r1core_sync_s'])} |",
        f"| vLLM in-process `reload_weights` (same state dict) | "
        f"{r['vllm_reload_median_s']:.3f} | "
        f"{', '.join(f'{x:.3f}' for x in r['vllm_reload_s'])} |",
        "",
        f"Ratio r1core / vLLM reload: **{r['ratio_r1core_over_vllm_reload']:.2f}x** "
        f"(goal <= 1.5x). First sync (creates the staging file): {r['first_sync_s']:.3f} s.",
        "",
        "Peak extra resident memory during one sync (process RSS above its value just "
        f"before; largest single tensor {r['largest_tensor_mib']:.1f} MiB):",
        "",
        "| bucket (MiB) | buckets | staging buffer (MiB) | split tensors reassembled | "
        "copied out at bucket edges (MiB) | peak extra (MiB) | sync (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in r["memory_by_bucket"]:
        lines.append(f"| {m['bucket_mib']:g} | {m['num_buckets']} | {m['staging_mib']:.4g} | "
                     f"{m['num_reassembled']} | {m['detached_mib']:.1f} | "
                     f"{m['peak_extra_mib']:.1f} | {m['sync_s']:.3f} |")
    in_place = sorted({n for m in r["memory_by_bucket"] for n in m["written_in_place"]})
    lines += ["", f"Written in place into the engine's live weights (no whole-tensor copy): "
              f"{', '.join(in_place) or 'none'}."]
    lines += ["", f"vLLM's own reload, same measure: {r['vllm_reload_peak_extra_mib']:.1f} MiB.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
