"""The real SmolLM2-135M-Instruct, when it has been fetched (``make smollm2``): its chat
template and stop tokens, the policy's log-probs against transformers, and ``r1core eval``
end to end. Skipped, with the command to run, where it was never fetched: the default test
run stays free of the 538 MB download and conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from r1core.data.fetch_smollm2 import default_dir, find_checkpoint

CHECKPOINT = find_checkpoint()
pytestmark = pytest.mark.skipif(
    CHECKPOINT is None, reason=f"SmolLM2-135M-Instruct not found at {default_dir()}: run `make smollm2` to fetch it"
)


def test_chat_template_and_stop_tokens():
    from r1core.data.templates import build_template
    from r1core.data.tokenizers import end_of_turn_id, load_tokenizer, stop_token_ids

    tokenizer = load_tokenizer(CHECKPOINT)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tokenizer) == im_end
    assert stop_token_ids(tokenizer, CHECKPOINT, chat=True) == [im_end]
    prompt = build_template("chat", tokenizer=tokenizer, system="Be brief.", instruction="Box it.")("What is 2+3?")
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?\nBox it.<|im_end|>\n"
                      "<|im_start|>assistant\n")
    generation = json.loads((CHECKPOINT / "generation_config.json").read_text())
    assert generation["eos_token_id"] == im_end


@pytest.mark.slow
def test_policy_logprobs_match_transformers():
    import torch
    from transformers import AutoModelForCausalLM

    pytest.importorskip("megatron.core")
    from r1core.data.tokenizers import load_tokenizer
    from r1core.models import build_policy

    tokenizer = load_tokenizer(CHECKPOINT)
    ids = torch.tensor([tokenizer.encode("<|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n12*7 = 84",
                                         add_special_tokens=False)])
    policy = build_policy(CHECKPOINT)
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT, dtype=torch.float32).eval()
    with torch.no_grad():
        reference = torch.log_softmax(model(ids).logits.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(policy.logprobs(ids), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_r1core_eval_on_gsm8k(tmp_path):
    pytest.importorskip("vllm")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, "-m", "r1core.cli", "eval", f"run.output_root={tmp_path}", "run.name=eval",
         f"policy.hf_dir={CHECKPOINT}", "eval.benchmark=gsm8k", "eval.limit=2", "eval.k=1", "eval.temperature=0",
         "eval.max_tokens=32", "data.template=chat", "data.instruction='Put your final answer within \\boxed{}.'",
         "rollout.dtype=float32", "rollout.max_model_len=64", "reward.num_workers=1"],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["gsm8k/num_problems"] == 2 and report["gsm8k/num_skipped_too_long"] == 0
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [s["gold"] for s in samples] == ["18", "3"]
    assert samples[0]["prompt"].startswith("<|im_start|>system") and "\\boxed{}" in samples[0]["prompt"]
    assert all(s["response"] and "<|im_end|>" not in s["response"] and 0 < s["num_tokens"] <= 32 for s in samples)
    assert "rollout.max_model_len raised from 64" in result.stderr  # the chat prompts + 32 tokens do not fit 64
