"""``python _vllm_check.py HF_DIR OUT_DIR``: export the policy, load the export in vLLM (CPU,
in-process engine), print the largest |vLLM prompt log-prob - policy log-prob|."""

from __future__ import annotations

import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

import torch  # noqa: E402


def main() -> None:
    from r1core.models import build_policy

    policy = build_policy(sys.argv[1])
    out = policy.export_hf(sys.argv[2])
    ids = torch.randint(0, policy.shape.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    want = policy.logprobs(ids)[0]
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(out), skip_tokenizer_init=True, dtype="float32",
              kv_cache_memory_bytes=64 << 20, enforce_eager=True)
    result = llm.generate([{"prompt_token_ids": ids[0].tolist()}],
                          SamplingParams(max_tokens=1, prompt_logprobs=0))
    prompt = result[0].prompt_logprobs
    got = torch.tensor([prompt[i + 1][int(ids[0, i + 1])].logprob for i in range(ids.shape[1] - 1)])
    print(f"MAX_ABS_DIFF {float((got - want).abs().max()):.3e}")


if __name__ == "__main__":
    main()
