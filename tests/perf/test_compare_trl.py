"""The bookkeeping of perf/compare_trl.py: argument checks, token counting, throughput."""

from __future__ import annotations

import pytest

from perf.compare_trl import parse_args, sample_tokens, throughput, training_prompts


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


def test_training_prompts_are_the_pipeline_ones():
    """TRL's dataset holds the same prompt strings and answers the r1core run trains on."""
    from r1core.config.loader import load_config
    from r1core.config.run import RunConfig
    from r1core.trainer.pipeline import Pipeline

    args = parse_args([])
    prompts, answers = training_prompts(args)
    cfg = load_config(RunConfig, None, [])
    pipeline = Pipeline.__new__(Pipeline)
    pipeline.cfg = cfg
    pipeline.build_task()
    assert prompts == [pipeline.template(p.problem) for p in pipeline.train_problems]
    assert answers == [p.answer for p in pipeline.train_problems]
    assert len(prompts) == cfg.data.num_train and prompts[0].endswith("<think>")
