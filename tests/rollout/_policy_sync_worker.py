"""torchrun entry point of ``test_policy_sync.py``.

``torchrun --nproc_per_node N _policy_sync_worker.py INITIAL_DIR OUT_DIR TENSOR PIPELINE
EXPERT ENGINE_MODE BUCKET_BYTES``

Every rank builds the Megatron policy from INITIAL_DIR with the given layout; rank 0
also starts a vLLM engine on the same weights and records its greedy outputs. Every
rank then changes its shard of every weight (the same elementwise function everywhere,
so the full model changes the same way whatever the layout), calls
``sync_policy_weights`` (rank 0 passes its engine), and the policy is exported to
OUT_DIR/export. Rank 0 writes OUT_DIR/result.json: greedy outputs before and after the
sync, the sync's stats and the staging buffer's size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    initial_dir, out_dir, tensor, pipeline, expert, engine_mode, bucket_bytes = sys.argv[1:8]
    import torch
    import torch.distributed as dist

    from r1core.models import ParallelConfig, build_policy
    from r1core.models.parallel import destroy_distributed
    from r1core.rollout import VLLMRollout, sync_policy_weights

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.rollout.conftest import MAX_MODEL_LEN, greedy

    parallel = ParallelConfig(tensor=int(tensor), pipeline=int(pipeline), expert=int(expert))
    policy = build_policy(initial_dir, parallel)
    rank = dist.get_rank()
    engine = None
    result: dict = {"world": dist.get_world_size()}
    if rank == 0:
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
        with open(Path(out_dir) / "result.json", "w") as handle:
            json.dump(result, handle)
    destroy_distributed()


if __name__ == "__main__":
    main()
