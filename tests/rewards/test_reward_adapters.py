"""Direct calls are bounded in time; rewards follow TRL's convention (checked inside a real
``trl.GRPOTrainer``) and verl's ``compute_score``."""

from __future__ import annotations

import inspect
import logging
import pickle
import tempfile
import time

import pytest

from r1core.rewards import (
    RewardPoolConfig,
    compose_rewards,
    compute_score,
    default_pool,
    get_reward,
    list_rewards,
    make_code_gold,
    math_accuracy,
    r1_format,
    set_default_pool_config,
    trl_reward,
    verl_compute_score,
)
from r1core.rewards.adapters import completion_text

pytest.importorskip("math_verify")

pytestmark = pytest.mark.usefixtures("sandbox")
POWER_TOWER = r"$\boxed{10^{10^{10^{10^{10}}}}}$"
GOOD = "<think>1+1</think><answer>2</answer>"


@pytest.fixture
def short_timeout():
    set_default_pool_config(RewardPoolConfig(num_workers=2, sample_timeout_s=3.0))
    default_pool().score(get_reward("r1_format"), ["x"], [""])  # workers up before any timing
    yield 3.0
    set_default_pool_config(RewardPoolConfig())


def test_direct_power_tower_returns_zero_within_the_timeout(short_timeout, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="r1core.rewards.pool"):
        # Against a gold that is itself a power (not a plain number, so the answer is not
        # refused as unevaluated arithmetic): math-verify computes the tower.
        scores = math_accuracy([POWER_TOWER, r"\boxed{1}"], ["2^{10}", "1"])
    elapsed = time.monotonic() - started
    assert scores == [0.0, 1.0]
    assert elapsed < short_timeout + 5.0, elapsed  # the timeout, plus scheduling on a loaded machine
    assert "reward sample 0 scored 0: timeout after 3 s" in caplog.text  # the pool's own reason
    reasons = get_reward("math_accuracy").score([POWER_TOWER], ["2^{10}"]).reasons
    assert reasons == ["timeout after 3 s"]


def test_every_builtin_reward_goes_through_the_default_pool():
    pool = default_pool()
    for name in sorted(list_rewards()):
        if name.startswith("test_"):
            continue
        before = pool._task_counter
        gold = make_code_gold(stdio=[("", "2\n")]) if name == "code_execution" else "2"
        response = "```python\nprint(2)\n```" if name == "code_execution" else GOOD
        scores = get_reward(name)([response], [gold])
        assert len(scores) == 1 and isinstance(scores[0], float)
        assert pool._task_counter == before + 1, name  # one batch scored by a worker


def test_direct_calls_raise_what_the_reward_raises():
    with pytest.raises(ValueError, match="not JSON"):
        get_reward("code_execution")(["```python\nprint(1)\n```"], ["not json"])
    with pytest.raises(ValueError, match="differ in length"):
        math_accuracy(["a", "b"], ["1"])


def test_names_and_pickling():
    assert math_accuracy.__name__ == "math_accuracy" and r1_format.__name__ == "r1_format"
    bound = get_reward("r1_format", allow_missing_think_open=True)
    assert bound.__name__ == "r1_format"
    assert pickle.loads(pickle.dumps(bound))(["x</think><answer>2</answer>"], [""]) == [1.0]
    assert pickle.loads(pickle.dumps(math_accuracy)) is math_accuracy


PLAIN = [GOOD, r"so \boxed{3}", "nothing"]
CONVERSATIONAL = [[{"role": "assistant", "content": text}] for text in PLAIN]


@pytest.mark.parametrize("completions", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
def test_trl_keyword_call(completions):
    kwargs = {"prompts": ["p"] * 3, "completion_ids": [[1]] * 3, "solution": ["2", "3", "4"],
              "trainer_state": None, "log_extra": print, "log_metric": print}
    assert math_accuracy(completions=completions, **kwargs) == [1.0, 1.0, 0.0]
    assert r1_format(completions=completions, **kwargs) == [1.0, 0.0, 0.0]
    by_column = trl_reward("math_accuracy", gold_column="expected", name="accuracy")
    assert by_column.__name__ == "accuracy"
    assert by_column(completions, prompts=["p"] * 3, expected=[2, 3, 5]) == [1.0, 1.0, 0.0]


def test_trl_errors_name_the_cause():
    with pytest.raises(TypeError, match="needs the gold answers.*'question'"):
        math_accuracy(completions=["x"], prompts=["p"], question=["q"])
    with pytest.raises(TypeError, match="gold column 'expected'"):
        trl_reward("math_accuracy", gold_column="expected")(["x"], solution=["1"])
    with pytest.raises(TypeError, match="role', 'content'"):
        r1_format(completions=[[{"text": "x"}]], prompts=["p"])
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}]},
                            {"role": "tool", "content": "ignored"}]) == "a"


def _tiny_trl_trainer(dataset, reward_funcs, max_steps: int = 1):
    """A real ``trl.GRPOTrainer`` on a 1-layer random Qwen2 and a character-level tokenizer."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789 <>/{}\\=+.")
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))
    args = trl.GRPOConfig(output_dir=tempfile.mkdtemp(prefix="r1core-trl-test-"), per_device_train_batch_size=2,
                          num_generations=2, max_completion_length=4, report_to="none", use_cpu=True, logging_steps=1,
                          max_steps=max_steps)
    return trl.GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args,
                           train_dataset=datasets.Dataset.from_dict(dataset), processing_class=tokenizer)


@pytest.mark.slow
def test_inside_a_real_trl_grpo_trainer():
    # TRL's own reward step (_calculate_rewards: keyword call, dataset columns, None -> NaN,
    # one value per completion, names from __name__), on plain and conversational samples;
    # then one real training step.
    rewards = [math_accuracy, r1_format, trl_reward("math_accuracy", gold_column="expected", name="by_column")]
    trainer = _tiny_trl_trainer({"prompt": [[{"role": "user", "content": "1+1"}]] * 2, "solution": ["2", "3"],
                                 "expected": ["2", "3"]}, rewards)
    assert trainer.reward_func_names == ["math_accuracy", "r1_format", "by_column"]
    inputs = [{"prompt": [{"role": "user", "content": "1+1"}], "solution": s, "expected": s} for s in ("2", "3")]
    prompts = [row["prompt"] for row in inputs]
    for completions in ([[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": r"\boxed{4}"}]],
                        [GOOD, r"\boxed{4}"]):
        rewards_per_function = trainer._calculate_rewards(inputs, prompts, completions, [[3, 4], [5]])
        assert rewards_per_function.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    trainer = _tiny_trl_trainer({"prompt": ["1+1", "2+2"], "answer": ["2", "4"]}, [math_accuracy, r1_format])
    trainer.train()
    logged = trainer.state.log_history[0]
    assert "rewards/math_accuracy/mean" in logged and "rewards/r1_format/mean" in logged


def test_verl_compute_score_convention(short_timeout):
    parameters = list(inspect.signature(compute_score).parameters.values())
    assert [p.name for p in parameters] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert parameters[-1].default is None
    # As verl's naive reward manager calls it: keywords, one sample.
    assert compute_score(data_source="openai/gsm8k", solution_str="#### 18", ground_truth="18",
                         extra_info={"split": "train"}) == 1.0
    assert compute_score("math", r"\boxed{\frac12}", "0.5") == 1.0
    mixed = verl_compute_score("math_accuracy", by_data_source={"code": "code_execution"})
    code_gold = {"stdio": [{"input": "", "output": "7\n"}]}
    assert mixed("code", "```python\nprint(7)\n```", code_gold) == 1.0
    assert mixed.batch(["math", "code", "math"], [r"\boxed{1}", "```python\nprint(8)\n```", POWER_TOWER],
                       ["1", code_gold, "2"]) == [1.0, 0.0, 0.0]


def test_composite_direct_call_is_one_pool_batch():
    composite = compose_rewards({"math_accuracy": 1.0, "r1_format": 0.5})
    pool = default_pool()
    before = pool._task_counter
    totals, parts = composite.score([GOOD, "nothing"], ["2", "2"])
    assert pool._task_counter == before + 1
    assert totals == [1.5, 0.0] and parts == {"math_accuracy": [1.0, 0.0], "r1_format": [1.0, 0.0]}
