"""torchrun entry point of ``test_policy_sync.py``.

``torchrun --nproc_per_node N _policy_sync_worker.py INITIAL_DIR OUT_DIR TENSOR PIPELINE
EXPERT ENGINE_MODE BUCKET_BYTES [SENDERS]``

Every rank builds the Megatron policy from INITIAL_DIR with the given layout; rank 0
(SENDERS=one, the default), or the leader of every data-parallel replica
(SENDERS=replicas), also starts a vLLM engine on the same weights and records its greedy
outputs. Every
rank then changes its shard of every weight (the same elementwise function everywhere,
so the full model changes the same way whatever the layout), calls
``sync_policy_weights`` (rank 0 passes its engine), and the policy is exported to
OUT_DIR/export. Rank 0 writes OUT_DIR/result.json: greedy outputs before and after the
sync, the sync's stats and the staging buffer's size; with SENDERS=replicas every sender
writes OUT_DIR/result_<rank>.json the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    initial_dir, out_dir, tensor, pipeline, expert, engine_mode, bucket_bytes = sys.argv[1:8]
    senders = sys.argv[8] if len(sys.argv) > 8 else "one"
    import torch
    import torch.distributed as dist

    from r1core.models import ParallelConfig, build_policy
    from r1core.parallel.groups import destroy_distributed
    from r1core.rollout import VLLMRollout, sync_policy_weights

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.rollout.conftest import MAX_MODEL_LEN, greedy

    parallel = ParallelConfig(tensor=int(tensor), pipeline=int(pipeline), expert=int(expert))
    policy = build_policy(initial_dir, parallel)
    rank = dist.get_rank()
    engine = None
    result: dict = {"world": dist.get_world_size()}
    if senders == "one":
        sends = rank == 0
    else:  # the replica's leader: model-parallel rank 0
        from megatron.core import parallel_state as ps

        sends = dist.get_rank(ps.get_model_parallel_group()) == 0
    if sends:
        engine = VLLMRollout(initial_dir, max_model_len=MAX_MODEL_LEN, dtype="float32",
                             engine_mode=engine_mode, bucket_bytes=int(bucket_bytes))
        result["before"] = greedy(engine)
    with torch.no_grad():
        for param in policy.model.parameters():
            param.add_(0.05 * torch.cos(97.0 * param))
    stats = sync_policy_weights(policy, engine, weight_version="step-1")
    result["stats"] = {"version": stats.weight_version, "num_tensors": stats.num_tensors,
                       "num_bytes": stats.num_bytes, "num_buckets": stats.num_buckets,
                       "staging_bytes": stats.staging_bytes}
    policy.export_hf(Path(out_dir) / "export")
    if engine is not None:
        result["after"] = greedy(engine)
        result["engine_version"] = engine.weight_version
        result["summary"] = engine.llm.collective_rpc("r1core_last_update_summary")[0]
        engine.close()
        name = "result.json" if senders == "one" else f"result_{rank}.json"
        with open(Path(out_dir) / name, "w") as handle:
            json.dump(result, handle)
    destroy_distributed()


if __name__ == "__main__":
    main()
