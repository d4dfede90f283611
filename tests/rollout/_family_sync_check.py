"""``python _family_sync_check.py KIND OUT_DIR``: a policy built from one random checkpoint of
``KIND`` syncs its weights into a vLLM engine (CPU, in-process) started on a differently
initialised checkpoint; prints ``RESULT {json}`` with the engine's and transformers' greedy
tokens, and whether a failed sync made the engine refuse to generate."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

import torch  # noqa: E402

PROMPTS = [list(range(3, 23)), [7, 9, 11, 13, 15]]
MAX_TOKENS = 8


def main() -> None:
    from families import write_family_checkpoint
    from transformers import AutoModelForCausalLM

    from r1core.models import build_policy
    from r1core.rollout import VLLMRollout

    kind, out = sys.argv[1], Path(sys.argv[2])
    trained = write_family_checkpoint(kind, out / "trained", seed=1)
    engine_start = write_family_checkpoint(kind, out / "engine_start", seed=2)
    policy = build_policy(trained)
    reference = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32).eval()
    want = []
    for prompt in PROMPTS:
        with torch.no_grad():
            ids = reference.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False,
                                     eos_token_id=None, pad_token_id=0)
        want.append(ids[0, len(prompt):].tolist())
    result: dict = {"want": want}
    with VLLMRollout(engine_start, max_model_len=64, dtype="float32", bucket_bytes=256 * 1024) as engine:
        engine.eos_token_ids = []  # compare whole continuations
        greedy = lambda: [s[0].token_ids for s in engine.generate(PROMPTS, n=1, max_tokens=MAX_TOKENS,  # noqa: E731
                                                                   temperature=0.0)]
        result["before"] = greedy()

        stats = engine.sync_weights(policy)
        result["got"] = greedy()
        result["tensors"] = stats.num_tensors

        class Partial:
            def iter_hf_weights(self):
                for index, item in enumerate(policy.iter_hf_weights()):
                    if index > 3:
                        raise RuntimeError("trainer failed mid-sync")
                    yield item

        try:
            engine.sync_weights(Partial())
        except RuntimeError as error:
            result["sync_error"] = str(error)[-500:]
        try:
            greedy()
            result["refused"] = ""
        except RuntimeError as error:
            result["refused"] = str(error)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
