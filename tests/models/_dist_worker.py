"""Entry point for the distributed tests: ``torchrun --nproc_per_node 2 _dist_worker.py
HF_DIR OUT_FILE tensor pipeline expert``. Every rank runs the workload and saves
its results to OUT_FILE.rank<r>."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from workload import run  # noqa: E402


def main() -> None:
    hf_dir, out_file, tensor, pipeline, expert = sys.argv[1:6]
    from r1core.models import OptimConfig, ParallelConfig, build_policy
    from r1core.parallel.groups import destroy_distributed

    import os

    # Sequence parallelism (GPU runs only): set R1CORE_TEST_SEQUENCE_PARALLEL to the tensor size.
    sequence_parallel = int(tensor) > 1 and os.environ.get("R1CORE_TEST_SEQUENCE_PARALLEL") == tensor
    parallel = ParallelConfig(tensor=int(tensor), pipeline=int(pipeline), expert=int(expert),
                              sequence_parallel=sequence_parallel)
    policy = build_policy(hf_dir, parallel, optim=OptimConfig(lr=1e-3, clip_grad=1.0))
    out: dict = {"world": dist.get_world_size()}
    run(policy, out)
    names = [name for name, _ in policy.iter_hf_weights()]
    out["hf_names"] = names
    export_dir = Path(out_file).with_suffix(".export")
    policy.export_hf(export_dir)
    torch.save(out, f"{out_file}.rank{dist.get_rank()}")
    destroy_distributed()


if __name__ == "__main__":
    main()
