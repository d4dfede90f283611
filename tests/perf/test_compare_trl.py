"""The bookkeeping of perf/compare_trl.py: argument checks, token counting, throughput."""

from __future__ import annotations

import pytest

from perf.compare_trl import (
    describe_model,
    describe_task,
    model_overrides,
    parse_args,
    run_config_overrides,
    sample_tokens,
    throughput,
    training_prompts,
)


def test_defaults_and_bad_arguments():
    args = parse_args([])
    assert (args.steps, args.prompts, args.group, args.max_tokens) == (8, 8, 8, 48)
    with pytest.raises(SystemExit):
        parse_args(["--group", "1"])
    with pytest.raises(SystemExit):
        parse_args(["--steps", "0"])


def test_bad_start_dir_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--start-dir", str(tmp_path)])
    assert "not a Hugging Face checkpoint" in capsys.readouterr().err


def test_sample_tokens_counts_prompt_plus_completion():
    assert sample_tokens([[1, 2, 3], [4]], [[5, 6], []]) == 6
    with pytest.raises(ValueError, match="prompts for"):
        sample_tokens([[1]], [[1], [2]])


def test_throughput_sums_before_dividing_and_skips_first():
    assert throughput([100.0, 300.0], [1.0, 1.0]) == pytest.approx(200.0)
    assert throughput([100.0, 300.0, 500.0], [10.0, 1.0, 1.0], skip_first=True) == pytest.approx(400.0)
    with pytest.raises(ValueError):
        throughput([], [])


def test_presets_fill_only_the_flags_not_given():
    args = parse_args(["--preset", "mixed", "--steps", "2"])
    assert (args.steps, args.max_tokens, args.num_terms, args.max_terms, args.hidden_size) == (2, 256, 2.0, 10, 512)
    assert model_overrides(args) == [
        "embedded.model.hidden_size=512", "embedded.model.num_layers=8",
        "embedded.model.intermediate_size=1536", "embedded.model.num_attention_heads=8",
    ]
    assert "data.options.max_terms=10" in run_config_overrides(args)
    embedded = parse_args([])
    assert model_overrides(embedded) == [] and run_config_overrides(embedded) == ["run.seed=1234"]
    with pytest.raises(SystemExit):
        parse_args(["--preset", "huge"])


def test_describe_model_counts_parameters(tmp_path):
    """The count in the report is the model's, the LM head counted once when tied."""
    import transformers

    # Per layer: q/k/v 64x128 + biases 128, o 64x64, SwiGLU 3x64x96, two norms 128 = 30976.
    config = transformers.Qwen2Config(vocab_size=4000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=96, tie_word_embeddings=True)
    config.save_pretrained(tmp_path)
    # 3 x 30976 + 4000 x 64 + 64 = 348992
    assert describe_model(tmp_path) == ("Qwen2, 0.3M parameters (hidden 64, 3 layers, 4 heads / 2 KV, "
                                        "SwiGLU 96, vocab 4000)")
    config.tie_word_embeddings = False
    config.save_pretrained(tmp_path)
    assert describe_model(tmp_path).startswith("Qwen2, 0.6M parameters")  # + 4000 x 64 = 604992


def test_describe_task_reads_the_run_configuration():
    assert describe_task(parse_args([])) == "3 operands; operands <= 5"
    assert describe_task(parse_args(["--preset", "mixed"])) == "2 to 10 operands, uniformly; operands <= 5"


@pytest.mark.parametrize("argv", [[], ["--preset", "mixed"]])
def test_training_prompts_are_the_pipeline_ones(argv):
    """TRL's dataset holds the same prompt strings and answers the r1core run trains on."""
    from r1core.config.loader import load_config
    from r1core.config.run import RunConfig
    from r1core.commands.train import Pipeline

    args = parse_args(argv)
    prompts, answers = training_prompts(args)
    cfg = load_config(RunConfig, None, run_config_overrides(args))
    pipeline = Pipeline.__new__(Pipeline)
    pipeline.cfg = cfg
    pipeline.build_task()
    assert prompts == [pipeline.template(p.problem) for p in pipeline.train_problems]
    assert answers == [p.answer for p in pipeline.train_problems]
    assert len(prompts) == cfg.data.num_train and prompts[0].endswith("<think>")


def test_smollm2_preset_prompts_through_the_chat_template(tmp_path):
    """The real-model preset: chat template, boxed-answer instruction, the example's reward
    and temperature, and a clear refusal when the checkpoint was never fetched."""
    from r1core.trainer.embedded import train_tokenizer

    tokenizer = train_tokenizer(["user assistant 3+4=? boxed"] * 2, tmp_path / "tok", vocab_size=80)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text("{}")
    args = parse_args(["--preset", "smollm2", "--start-dir", str(tmp_path / "tok")])
    assert (args.steps, args.prompts, args.group, args.max_tokens, args.template) == (3, 4, 4, 128, "chat")
    assert "data.template=chat" in run_config_overrides(args)
    assert any(o.startswith("data.instruction=") and "boxed" in o for o in run_config_overrides(args))
    prompts, answers = training_prompts(args, tokenizer)
    assert prompts[0].startswith("<|im_start|>user\n") and prompts[0].endswith("\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert len(prompts) == len(answers) == 700
    from perf.compare_trl import reward_overrides

    assert reward_overrides(args) == ["reward.weights={math_accuracy: 1.0, answer_marker: 0.2, r1_format: 0.0}"]
    assert args.temperature == 0.7 and parse_args([]).temperature == 1.0
