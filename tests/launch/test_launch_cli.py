"""``r1core launch plan|torchrun|slurm`` from the command line: output and exit status."""

from __future__ import annotations

import json

from r1core.launch.cli import EXIT_INVALID_LAYOUT, EXIT_OVER_MEMORY, main


def test_plan_prints_groups_and_memory_for_a_valid_layout(capsys):
    status = main(["plan", "--gpus", "64", "--gpus-per-node", "8", "--tp", "4", "--pp", "2",
                   "--model", "qwen2.5-32b", "--rollout-tp", "4"])
    out = capsys.readouterr().out
    assert status == 0
    assert "64 GPUs = TP 4 x CP 1 x DP 8 x PP 2" in out
    assert "[0,1,2,3] [4,5,6,7]" in out  # first TP groups
    assert "[0,32] [1,33]" in out  # first PP groups: stage 2 starts at rank 32
    assert "optimizer (fp32 main + Adam)" in out and "fits" in out
    assert "rollout KV cache holds" in out


def test_plan_refuses_an_impossible_layout(capsys):
    status = main(["plan", "--gpus", "64", "--tp", "3", "--pp", "2"])
    err = capsys.readouterr().err
    assert status == EXIT_INVALID_LAYOUT
    assert "world size 64 is not divisible by tensor x pipeline x context = 3 x 2 x 1 = 6" in err


def test_plan_refuses_a_model_that_does_not_split(capsys):
    status = main(["plan", "--gpus", "16", "--tp", "8", "--model", "qwen2.5-7b"])
    assert status == EXIT_INVALID_LAYOUT
    assert "num_attention_heads=28 is not divisible by tensor=8" in capsys.readouterr().err


def test_plan_reads_a_hugging_face_config(tmp_path, capsys):
    config = {"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 8, "intermediate_size": 1024, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    status = main(["plan", "--gpus", "8", "--tp", "2", "--pp", "2", "--model", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0 and "vocabulary padded from 1000 to 1024" in out


def test_plan_flags_a_layout_that_runs_out_of_memory(capsys):
    status = main(["plan", "--gpus", "8", "--model", "llama-3-70b"])
    captured = capsys.readouterr()
    assert status == EXIT_OVER_MEMORY
    assert "DOES NOT FIT" in captured.out and "exceeds GPU memory" in captured.err
    assert main(["plan", "--gpus", "8", "--model", "llama-3-70b", "--allow-over-memory"]) == 0


def test_torchrun_passes_the_layout_on_as_overrides(capsys):
    status = main(["torchrun", "--nproc-per-node", "8", "--tp", "2", "--sequence-parallel",
                   "--", "train", "--config", "run.yaml"])
    out = capsys.readouterr().out.strip()
    assert status == 0
    assert out == ("python -m r1core.launch.node -- --standalone --nnodes=1 --nproc-per-node=8 -m r1core.cli train "
                   "--config run.yaml parallel.tensor=2 parallel.sequence_parallel=true")
    assert main(["torchrun", "--nproc-per-node", "8", "--tp", "3", "--", "train"]) == EXIT_INVALID_LAYOUT


def test_slurm_writes_a_validated_script(tmp_path, capsys):
    target = tmp_path / "job.sbatch"
    status = main(["slurm", "--nodes", "8", "--gpus-per-node", "8", "--tp", "8", "--pp", "2",
                   "--partition", "gpu", "--output", str(target), "--", "train", "--config", "run.yaml"])
    assert status == 0
    text = target.read_text()
    assert "#SBATCH --nodes=8" in text and "#SBATCH --partition=gpu" in text
    assert "-m r1core.cli train --config run.yaml parallel.tensor=8 parallel.pipeline=2" in text
    capsys.readouterr()
    # 8 nodes x 8 GPUs cannot hold TP 8 x PP 16 x CP 2 = 256 ranks per replica.
    assert main(["slurm", "--nodes", "8", "--tp", "8", "--pp", "16", "--cp", "2", "--", "train"]) == EXIT_INVALID_LAYOUT
    assert "not divisible" in capsys.readouterr().err


def test_plan_reads_the_layout_from_a_run_config(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("parallel:\n  tensor: 4\n  pipeline: 2\n")
    assert main(["plan", "--gpus", "16", "--config", str(path)]) == 0
    assert "16 GPUs = TP 4 x CP 1 x DP 2 x PP 2" in capsys.readouterr().out
    assert main(["plan", "--gpus", "16", "--config", str(path), "--pp", "1"]) == 0  # flag wins
    assert "16 GPUs = TP 4 x CP 1 x DP 4 x PP 1" in capsys.readouterr().out
    path.write_text("parallel:\n  tensr: 4\n")
    assert main(["plan", "--gpus", "16", "--config", str(path)]) == EXIT_INVALID_LAYOUT
    assert "parallel.tensr" in capsys.readouterr().err


def test_plan_checks_the_run_config_batch_against_data_parallelism(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("parallel:\n  tensor: 2\ntrainer:\n  prompts_per_step: 6\nsft:\n  epochs: 0\n")
    assert main(["plan", "--gpus", "12", "--config", str(path)]) == 0  # DP 6 divides 6
    capsys.readouterr()
    assert main(["plan", "--gpus", "16", "--config", str(path)]) == EXIT_INVALID_LAYOUT  # DP 8
    err = capsys.readouterr().err
    assert "trainer.prompts_per_step=6 is not divisible by the data-parallel size 8" in err
    # The cold start's batch is checked only when the run has one.
    path.write_text("parallel:\n  tensor: 2\ntrainer:\n  prompts_per_step: 8\nsft:\n  batch_size: 12\n")
    assert main(["plan", "--gpus", "16", "--config", str(path)]) == EXIT_INVALID_LAYOUT
    assert "sft.batch_size=12" in capsys.readouterr().err
