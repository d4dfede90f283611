"""Configuration: defaults, YAML, dotted overrides, and errors that name the key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pytest
from omegaconf import MISSING

from r1core.config import ConfigError, RunConfig, config_to_dict, dump_config, load_config
from r1core.parallel.layout import ParallelConfig
from r1core.trainer.checkpoint import CheckpointConfig


def test_defaults_are_real_dataclass_instances():
    config = load_config(RunConfig)
    assert isinstance(config, RunConfig)
    assert isinstance(config.parallel, ParallelConfig)
    assert isinstance(config.checkpoint, CheckpointConfig)
    assert config == RunConfig()


def test_yaml_then_overrides_in_that_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run:\n  name: exp1\n  seed: 5\nparallel:\n  tensor: 2\n  pipeline: 2\n")
    config = load_config(RunConfig, path, ["parallel.tensor=4", "checkpoint.keep_last=1", "run.output_root=/tmp/x"])
    assert (config.run.name, config.run.seed) == ("exp1", 5)
    assert (config.parallel.tensor, config.parallel.pipeline) == (4, 2)
    assert config.checkpoint.keep_last == 1
    assert config.checkpoint_directory == "/tmp/x/exp1/checkpoints"


def test_unknown_override_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as raised:
        load_config(RunConfig, None, ["parallel.tensr=2"])
    message = str(raised.value)
    assert raised.value.key == "parallel.tensr"
    assert "unknown configuration key 'parallel.tensr'" in message
    assert "Did you mean: 'tensor'?" in message
    assert "tensor, virtual_pipeline" in message


def test_unknown_yaml_key_names_the_file_and_full_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("checkpoint:\n  keep_lats: 3\n")
    with pytest.raises(ConfigError) as raised:
        load_config(RunConfig, path)
    assert raised.value.key == "checkpoint.keep_lats"
    assert str(path) in str(raised.value) and "keep_last" in str(raised.value)


def test_unknown_top_level_key_lists_the_sections():
    with pytest.raises(ConfigError, match="unknown configuration key .trainr. .*Valid keys at the top level: algorithm, checkpoint, data"):
        load_config(RunConfig, None, ["trainr.steps=3"])


def test_unknown_key_inside_a_component_section_lists_its_keys():
    with pytest.raises(ConfigError, match="unknown configuration key 'trainer.lr'.*prompts_per_step"):
        load_config(RunConfig, None, ["trainer.lr=1e-6"])


def test_component_sections_accept_their_keys():
    cfg = load_config(RunConfig, None, ["policy.lr=1e-6", "trainer.steps=3", "reward.weights.length_penalty=0.5"])
    assert cfg.policy.lr == 1e-6 and cfg.trainer.steps == 3
    assert cfg.reward.weights == {"math_accuracy": 1.0, "r1_format": 0.1, "length_penalty": 0.5}


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("parallel.tensor=two", "parallel.tensor", "could not be converted to Integer"),
        ("parallel.tensor=1.5", "parallel.tensor", "could not be converted to Integer"),
        ("parallel.sequence_parallel=maybe", "parallel.sequence_parallel", "not a valid bool"),
        ("parallel.tensor=null", "parallel.tensor", "Incompatible value 'None'"),
        ("parallel=3", "parallel", "not a subclass of ParallelConfig"),
    ],
)
def test_type_mismatches_name_the_key(override, key, fragment):
    with pytest.raises(ConfigError) as raised:
        load_config(RunConfig, None, [override])
    assert raised.value.key == key
    assert f"'{key}'" in str(raised.value) and fragment in str(raised.value)


@pytest.mark.parametrize("override", ["parallel.tensor", "=3", "parallel..tensor=2", "run.seed=[1"])
def test_malformed_overrides(override):
    with pytest.raises(ConfigError):
        load_config(RunConfig, None, [override])


def test_yaml_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(RunConfig, listing)


def test_dump_then_load_gives_an_equal_config(tmp_path):
    config = load_config(RunConfig, None, ["parallel.virtual_pipeline=2", "parallel.pipeline=4", "run.name=r"])
    path = tmp_path / "run" / "config.yaml"
    text = dump_config(config, path)
    assert path.read_text() == text and "virtual_pipeline: 2" in text
    assert load_config(RunConfig, path) == config
    assert not list(path.parent.glob(".*.tmp"))


@dataclass
class Inner:
    values: list[int] = field(default_factory=lambda: [1, 2])
    ratio: Optional[float] = None
    required: str = MISSING


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def test_component_schemas_lists_optionals_required_and_post_init():
    config = load_config(Outer, None, ["inner.required=abc", "inner.values=[3,4,5]", "inner.ratio=0.5"])
    assert config.inner.values == [3, 4, 5] and config.inner.ratio == 0.5 and config.inner.required == "abc"
    with pytest.raises(ConfigError, match="'inner.required' is required"):
        load_config(Outer)
    with pytest.raises(ConfigError, match="count must be >= 0"):
        load_config(Outer, None, ["inner.required=x", "count=-1"])
    with pytest.raises(ConfigError, match=r"'inner.values\[0\]'"):
        load_config(Outer, None, ["inner.values=[a]", "inner.required=x"])


def test_schema_must_be_a_dataclass():
    with pytest.raises(TypeError, match="must be a dataclass type"):
        load_config(dict)


def test_algorithm_section_is_the_algorithms_package_config():
    config = load_config(RunConfig, None, ["algorithm.loss=dapo", "algorithm.clip_high=0.28"])
    assert (config.algorithm.loss, config.algorithm.clip_high) == ("dapo", 0.28)
    with pytest.raises(ConfigError, match="unknown policy loss 'nope'; valid: cispo"):
        load_config(RunConfig, None, ["algorithm.loss=nope"])
    with pytest.raises(ConfigError, match="'algorithm.clip_hi'"):
        load_config(RunConfig, None, ["algorithm.clip_hi=0.3"])


def test_algorithm_preset_key_starts_the_section_from_the_recipe(tmp_path):
    """`algorithm.preset=NAME` loads the recipe; the keys given beside it change it, wherever
    they come from (file or override), and an unknown name is refused with the valid ones."""
    path = tmp_path / "run.yaml"
    path.write_text("algorithm:\n  preset: grpo\n  kl_coef: 0.01\n")
    config = load_config(RunConfig, path, ["algorithm.clip_high=0.3"])
    assert (config.algorithm.preset, config.algorithm.kl_mode, config.algorithm.kl_coef) == ("grpo", "loss", 0.01)
    assert config.algorithm.clip_high == 0.3 and not config.algorithm.dynamic_sampling.enabled
    dapo = load_config(RunConfig, None, ["algorithm.preset=dapo"]).algorithm
    assert dapo.dynamic_sampling.enabled and dapo.overlong.buffer_fraction == 0.2
    default = load_config(RunConfig, None, []).algorithm
    assert default.loss == "dapo" and not default.dynamic_sampling.enabled  # the embedded run's choice
    with pytest.raises(ConfigError, match="unknown algorithm preset 'vapo'; valid: cispo"):
        load_config(RunConfig, None, ["algorithm.preset=vapo"])


# ---------------------------------------------------------------------- values checked on load


@pytest.mark.parametrize(("override", "fragment"), [
    ("trainer.prompts_per_step=0", "trainer.prompts_per_step must be >= 1"),
    ("trainer.temperature=0", "trainer.temperature must be > 0"),
    ("trainer.top_p=1.5", "trainer.top_p must be in (0, 1]"),
    ("sft.epochs=-1", "sft.epochs must be >= 0"),
    ("sft.trace_noise=2", "sft.trace_noise must be in [0, 1]"),
    ("policy.weight_decay=-0.1", "policy.weight_decay must be >= 0"),
    ("rollout.gpu_memory_utilization=1.5", "rollout.gpu_memory_utilization must be in (0, 1]"),
    ("rollout.dtype=float8", "rollout.dtype must be one of"),
    ("reward.sample_timeout_s=0", "reward.sample_timeout_s must be > 0"),
    ("parallel.backend=mpi", "parallel.backend must be nccl, gloo or null"),
    ("embedded.model.num_key_value_heads=3", "embedded.model.num_attention_heads=4 is not divisible by"),
    ("embedded.vocab_size=0", "embedded.vocab_size must be >= 1"),
    ("checkpoint.stop_timeout_s=0", "checkpoint.stop_timeout_s must be > 0"),
    ("checkpoint.start_if_none=true", "checkpoint.start_if_none=true needs checkpoint.resume=true"),
    ("logging.wandb.mode=loud", "logging.wandb.mode must be one of"),
    ("rollout.max_model_len=600", "exceeds the embedded model's embedded.model.max_position_embeddings=512"),
    ("algorithm.length_schedule=0:64", "above trainer.max_response_tokens=48"),
])
def test_out_of_range_values_are_refused_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as error:
        load_config(RunConfig, overrides=[override])
    assert fragment in str(error.value)


def test_an_empty_reward_mix_is_refused():
    from r1core.rewards.config import RewardConfig

    with pytest.raises(ValueError, match="reward.weights is empty"):
        RewardConfig(weights={})


def test_logging_level_is_case_insensitive():
    assert load_config(RunConfig, overrides=["logging.level=DEBUG"]).logging.level == "debug"


def test_files_are_checked_by_each_sections_validate(tmp_path):
    """``validate()`` reads files; ``__post_init__`` does not, so a section can be built
    without them while a run is refused before any work."""
    from r1core.models.policy_config import PolicyConfig

    PolicyConfig(hf_dir=str(tmp_path / "absent"))  # building does not touch the file system
    with pytest.raises(ConfigError, match="is not a folder"):
        load_config(RunConfig, overrides=[f"policy.hf_dir={tmp_path / 'absent'}"])
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable config.json"):
        load_config(RunConfig, overrides=[f"policy.hf_dir={tmp_path}"])
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_bigcode"}))
    with pytest.raises(ConfigError, match="gpt_bigcode"):
        load_config(RunConfig, overrides=[f"policy.hf_dir={tmp_path}"])
    assert load_config(RunConfig, overrides=[f"policy.hf_dir={tmp_path}"], validate=False).policy.hf_dir


def test_sft_traces_are_streamed_with_a_row_bound(tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_bytes(b'{"prompt": "a", "response": "b"}\n' + b"x" * 100 + b"\n")
    assert load_config(RunConfig, overrides=[f"sft.traces={traces}", "sft.max_row_bytes=100"])
    with pytest.raises(ConfigError, match="line 2 is longer than sft.max_row_bytes=99"):
        load_config(RunConfig, overrides=[f"sft.traces={traces}", "sft.max_row_bytes=99"])


def test_world_checks_layout_model_and_batch():
    from r1core.parallel.layout import LayoutError

    config = load_config(RunConfig, overrides=["parallel.tensor=2"])
    config.check_world(2)
    with pytest.raises(LayoutError, match="num_attention_heads=4 is not divisible by tensor=8"):
        load_config(RunConfig, overrides=["parallel.tensor=8"]).check_world(8)
    with pytest.raises(ConfigError, match="trainer.prompts_per_step"):
        load_config(RunConfig, overrides=["trainer.prompts_per_step=3"]).check_world(2)


def test_world_check_reads_the_configured_model(tmp_path):
    from r1core.parallel.layout import LayoutError

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 96, "intermediate_size": 192,
        "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 3}))
    config = load_config(RunConfig, overrides=[f"policy.hf_dir={tmp_path}", "parallel.pipeline=2"])
    with pytest.raises(LayoutError, match="num_layers=3 is not divisible by pipeline=2"):
        config.check_world(2)


def test_resume_allows_steps_and_logging_but_names_model_data_and_algorithm_changes():
    from r1core.config.run import changed_for_resume

    saved = config_to_dict(load_config(RunConfig))
    allowed = config_to_dict(load_config(RunConfig, overrides=[
        "trainer.steps=80", "logging.tensorboard=false", "checkpoint.resume=true", "eval.every=5",
        "reward.num_workers=4", "checkpoint.keep_last=1"]))
    assert changed_for_resume(saved, allowed) == []
    refused = config_to_dict(load_config(RunConfig, overrides=[
        "embedded.model.hidden_size=64", "data.num_train=10", "algorithm.clip_high=0.3", "run.seed=7"]))
    assert changed_for_resume(saved, refused) == [
        "algorithm.clip_high (0.28 -> 0.3)", "data.num_train (700 -> 10)",
        "embedded.model.hidden_size (128 -> 64)", "run.seed (1234 -> 7)"]
    del saved["policy"]["hf_dir"]
    assert changed_for_resume(saved, config_to_dict(load_config(RunConfig))) == ["policy.hf_dir ('<absent>' -> '')"]


def test_described_configuration_loads_back_equal(tmp_path):
    from r1core.config.docs import describe_config, field_docs

    config = load_config(RunConfig, overrides=["reward.weights.length_penalty=0.5", "checkpoint.stop_signals=[SIGUSR2]",
                                               "algorithm.preset=grpo"])
    text = describe_config(config)
    path = tmp_path / "described.yaml"
    path.write_text(text)
    assert load_config(RunConfig, path) == config
    # The algorithm section documents its fields in its class docstring; a "see X" entry
    # takes the documentation X gives the field.
    docs = field_docs(type(config.algorithm))
    assert docs["clip_high"].startswith("the ratio (or IS weight")
    assert "# Longest time from a stop signal to the exit" in text
