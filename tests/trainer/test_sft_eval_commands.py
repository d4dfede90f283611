"""``r1core sft`` (distillation from jsonl traces), ``r1core eval`` and ``r1core train`` on
dataset files, on a tiny local model; bad data stops each with one line and exit status 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("vllm")
pytest.importorskip("megatron.core")
pytest.importorskip("math_verify")

pytestmark = pytest.mark.slow

TRACES = [
    {"prompt": f"{a}+{b}=?\n<think>", "response": f"{a}+{b}={a + b}</think><answer>{a + b}</answer>"}
    for a in range(6)
    for b in range(6)
]


def run_r1core(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "r1core.cli", *args], capture_output=True, text=True, env=env, timeout=900)


def r1core(*args: str) -> subprocess.CompletedProcess:
    result = run_r1core(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return result


def tiny_model(root):
    """A tokenizer trained on the traces and a one-layer random Qwen2 model."""
    from r1core.trainer.embedded import EmbeddedModelConfig, make_tiny_qwen2, train_tokenizer

    corpus = [row["prompt"] + row["response"] for row in TRACES]
    tokenizer = train_tokenizer(corpus, root / "tok", vocab_size=48)
    return make_tiny_qwen2(
        root / "start", tokenizer,
        EmbeddedModelConfig(hidden_size=64, num_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128),
    )


def test_sft_then_eval(tmp_path):
    start = tiny_model(tmp_path)
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(row) + "\n" for row in TRACES))
    r1core("sft", f"run.output_root={tmp_path}", "run.name=sft", f"policy.hf_dir={start}", f"sft.traces={traces}",
           "sft.epochs=2", "sft.batch_size=12", "sft.micro_batch_size=12")
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["examples"] == len(TRACES) and summary["steps"] == 6
    history = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["nll"] < history[0]["nll"]

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"{a}+{a}=?", "answer": str(2 * a)}) + "\n" for a in range(4)))
    r1core("eval", f"run.output_root={tmp_path}", "run.name=eval", f"policy.hf_dir={tmp_path / 'sft' / 'final'}",
           f"eval.benchmark={problems}", "eval.k=2", "eval.max_tokens=12", "rollout.max_model_len=16", "reward.num_workers=1")
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["problems/num_problems"] == 4 and report["problems/num_samples"] == 2
    for key in ("problems/avg@2", "problems/pass@1", "problems/pass@2", "problems/maj@2"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["problems/pass@2"] >= report["problems/pass@1"]
    assert report["problems/num_skipped_too_long"] == 0
    # One record per sample; the decoder keeps the R1 tags (single special tokens of this
    # tokenizer), so an answer written in <answer> tags is the one extracted and voted.
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {s["sample"] for s in samples} == {0, 1}
    assert set(samples[0]) >= {"id", "prompt", "gold", "response", "answer", "score", "correct", "num_tokens",
                               "finish_reason"}
    assert samples[0]["prompt"] == "0+0=?\n<think>"
    assert any(tag in s["response"] for s in samples for tag in ("</think>", "<answer>")), \
        "the fine-tuned model should write R1 tags; none survived decoding"
    for sample in samples:
        written = re.fullmatch(r"[^<]*</think><answer>([^<]*)</answer>", sample["response"])
        if written:
            assert sample["answer"] == written.group(1).strip()
            assert sample["score"] == float(written.group(1).strip() == sample["gold"])


def test_sft_without_traces_names_what_is_missing(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "r1core.cli", "sft", f"run.output_root={tmp_path}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "sft.traces" in result.stderr


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def one_line_exit_2(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-4000:]
    # The progress bar of `train` may share the terminal line with the message.
    lines = re.findall(r"r1core (?:train|eval|sft): [^\r\n]*", result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-4000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_bad_data_stops_eval_and_train_with_one_line(model_dir, tmp_path):
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"problem": "1+1=?", "answer": "2"}) + "\n" + json.dumps({"problem": "2+2=?"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    base = [f"run.output_root={tmp_path}", f"policy.hf_dir={model_dir}"]
    one_line_exit_2(run_r1core("eval", *base, "run.name=e1", f"eval.benchmark={missing}"),
                    f"{missing}:2", "missing field 'answer'")
    one_line_exit_2(run_r1core("eval", *base, "run.name=e2", f"eval.benchmark={empty}"), str(empty), "no rows")
    one_line_exit_2(run_r1core("eval", *base, "run.name=e3", "eval.benchmark=gsm9k"), "unknown benchmark 'gsm9k'")
    one_line_exit_2(run_r1core("train", *base, "run.name=t1", f"data.train_files=[{missing}]", "data.template=raw"),
                    f"{missing}:2", "missing field 'answer'")
    one_line_exit_2(run_r1core("train", *base, "run.name=t2", "data.train_files=[amc24]"), "unknown benchmark 'amc24'")
    # Every prompt over the budget: nothing to evaluate.
    one_line_exit_2(run_r1core("eval", *base, "run.name=e4", "eval.benchmark=amc23", "data.template=raw",
                               "data.max_prompt_tokens=3"), "every prompt is longer than 3 tokens")


def test_long_prompts_are_skipped_and_counted(model_dir, tmp_path):
    problems = tmp_path / "problems.jsonl"
    rows = [{"problem": "1+1=?", "answer": "2"}, {"problem": "1+1=? " * 40, "answer": "2"}, {"problem": "2+2=?", "answer": "4"}]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = r1core("eval", f"run.output_root={tmp_path}", "run.name=eval", f"policy.hf_dir={model_dir}",
                    f"eval.benchmark={problems}", "eval.k=1", "eval.max_tokens=4", "data.template=raw",
                    "data.max_prompt_tokens=20", "reward.num_workers=1")
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["problems/num_problems"] == 2 and report["problems/num_skipped_too_long"] == 1
    assert "skipped 1 of 3 problems whose prompt is longer than 20 tokens" in result.stderr


def test_train_on_dataset_files(model_dir, tmp_path):
    """``r1core train`` on jsonl datasets with a field mapping and a given checkpoint: no synthetic cold start,
    GSM8K-style golds, prompts over the budget skipped and counted, the engine sized to the
    prompts, a learning-rate warmup, token-budget micro-batches and periodic HF exports."""
    data = tmp_path / "train.jsonl"
    rows = [{"question": f"{a}+{b}=?", "solution": f"{a}+{b}={a + b}\n#### {a + b}"} for a in range(6) for b in range(6)]
    rows.append({"question": "1+1=? " * 60, "solution": "#### 2"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"question": f"{a}+{a}=?", "solution": f"#### {2 * a}"}) + "\n" for a in range(4)))
    r1core("train", f"run.output_root={tmp_path}", "run.name=files", f"policy.hf_dir={model_dir}",
           f"data.train_files=[{data}]", f"data.eval_files=[{held}]", "data.fields={answer: solution}",
           "data.template=raw", "data.max_prompt_tokens=24",
           "trainer.steps=2", "trainer.prompts_per_step=4", "trainer.samples_per_prompt=2",
           "trainer.max_response_tokens=8", "trainer.micro_batch_tokens=20", "eval.k=1", "eval.max_tokens=8",
           "eval.every=1", "reward.num_workers=1", "policy.warmup_steps=2", "policy.lr=1e-3", "policy.export_every=1",
           "rollout.max_model_len=16", "checkpoint.interval=2")
    run_dir = tmp_path / "files"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["phase"] == "sft"], "a real checkpoint got a synthetic cold start"
    data_record = next(r for r in records if r["phase"] == "data")
    assert data_record["train_skipped_too_long"] == 1 and data_record["train_problems"] == 36
    assert data_record["eval_problems"] == 4 and data_record["prompt_budget"] == 24
    assert data_record["max_model_len"] == 24 + 8  # raised from 16 to fit prompt + response budgets
    lrs = [r["lr"] for r in records if r["phase"] == "train"]
    assert lrs == pytest.approx([5e-4, 1e-3])
    assert (run_dir / "hf" / "step_000001" / "config.json").is_file() and (run_dir / "final" / "config.json").is_file()
    assert not (run_dir / "hf" / "step_000002").exists()  # the last step is final/
