"""Own-process engine mode, run as a script by ``test_own_process.py``.

vLLM spawns the engine core in its own process here, so engine creation must stay under
``if __name__ == "__main__":``. For each (initial_dir, updated_dir) pair it starts an
engine on the initial weights, syncs the updated ones from a transformers model and
writes the greedy outputs as JSON for the test to compare with a fresh engine.

Usage: python own_process_sync.py OUT.json INITIAL_DIR UPDATED_DIR [INITIAL_DIR UPDATED_DIR ...]
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> None:
    from transformers import AutoModelForCausalLM

    from r1core.rollout import ModuleWeightSource, VLLMRollout
    from tests.rollout.conftest import MAX_MODEL_LEN, greedy

    out_path, dirs = argv[0], argv[1:]
    results = []
    for initial_dir, updated_dir in zip(dirs[0::2], dirs[1::2]):
        engine = VLLMRollout(initial_dir, max_model_len=MAX_MODEL_LEN, dtype="float32",
                             engine_mode="own_process", bucket_bytes=64 * 1024)
        before = greedy(engine)
        model = AutoModelForCausalLM.from_pretrained(updated_dir, dtype="float32")
        stats = engine.sync_weights(ModuleWeightSource(model))
        results.append({"before": before, "after": greedy(engine),
                        "num_buckets": stats.num_buckets, "version": engine.weight_version})
        engine.close()
    with open(out_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1:])
