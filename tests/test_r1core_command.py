"""The ``r1core`` command: configuration checked before any work, dispatch to components,
clear errors for components not present, ``launch`` delegation."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from r1core import cli


@pytest.fixture
def entry_module(tmp_path, monkeypatch):
    """A real importable module whose run(cfg) records what it was given."""
    package = tmp_path / "entry_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(textwrap.dedent("""
        from pathlib import Path
        def run(cfg):
            Path(cfg.run.output_root, "received.txt").write_text(
                f"{type(cfg).__name__} tensor={cfg.parallel.tensor} resume={cfg.checkpoint.resume}")
            return 0
    """))
    (package / "broken.py").write_text("import a_module_that_does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "entry_pkg"


def test_train_dispatches_a_validated_config(tmp_path, monkeypatch, entry_module):
    monkeypatch.setitem(cli.COMMANDS, "train", cli.Command(f"{entry_module}.good", "test", resumable=True))
    root = tmp_path / "runs"
    root.mkdir()
    status = cli.main(["train", f"run.output_root={root}", "--resume", "parallel.tensor=2"])
    assert status == 0
    assert (root / "received.txt").read_text() == "RunConfig tensor=2 resume=True"
    assert "tensor: 2" in (root / "r1core" / "config.yaml").read_text()  # saved into the run dir


def test_unknown_key_fails_before_any_work(tmp_path, monkeypatch, entry_module, capsys):
    monkeypatch.setitem(cli.COMMANDS, "train", cli.Command(f"{entry_module}.good", "test", resumable=True))
    root = tmp_path / "runs"
    root.mkdir()
    status = cli.main(["train", f"run.output_root={root}", "trainer.lr=1e-6"])
    assert status == cli.EXIT_CONFIG_ERROR
    assert "unknown configuration key 'trainer.lr'" in capsys.readouterr().err
    assert list(root.iterdir()) == []  # nothing written, nothing run


def test_config_file_errors_name_the_key(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("parallel:\n  tensor: four\n")
    assert cli.main(["sft", "--config", str(path)]) == cli.EXIT_CONFIG_ERROR
    assert "'parallel.tensor'" in capsys.readouterr().err


def test_missing_component_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "eval", cli.Command("r1core.no_such_module_here", "test", resumable=True))
    status = cli.main(["eval", f"run.output_root={tmp_path}"])
    assert status == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "r1core.no_such_module_here is not part of this installation" in err
    assert list(tmp_path.iterdir()) == []


def test_import_errors_inside_a_component_are_not_hidden(monkeypatch, entry_module):
    monkeypatch.setitem(cli.COMMANDS, "train", cli.Command(f"{entry_module}.broken", "test", resumable=True))
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist_anywhere"):
        cli.main(["train"])


def test_print_config_shows_the_resolved_configuration(capsys):
    assert cli.main(["train", "--print-config", "--resume", "parallel.pipeline=4", "run.seed=9"]) == 0
    out = capsys.readouterr().out
    assert "pipeline: 4" in out and "seed: 9" in out and "resume: true" in out


def test_print_config_shows_dapo_in_the_algorithm_section(capsys):
    """DAPO's knobs are algorithm keys; the embedded default leaves its sampling strategies off."""
    assert cli.main(["train", "--print-config", "algorithm.dynamic_sampling.enabled=true"]) == 0
    out = capsys.readouterr().out
    algorithm = out[out.index("algorithm:"):].split("\n\n")[0]
    for key in ("dynamic_sampling:", "enabled: true", "max_refill_rounds:", "overlong:", "buffer_fraction: 0.0",
                "difficulty:", "curriculum: false", "length_schedule:", "clip_high: 0.28", "loss: dapo"):
        assert key in algorithm, key
    trainer = out[out.index("\ntrainer:"):]
    assert "dynamic_sampling" not in trainer.split("\n\n")[0] and "overlong" not in trainer.split("\n\n")[0]


def test_launch_is_delegated(capsys):
    assert cli.main(["launch", "plan", "--gpus", "8", "--tp", "2"]) == 0
    assert "8 GPUs = TP 2 x CP 1 x DP 4 x PP 1" in capsys.readouterr().out


def test_module_entry_point_as_torchrun_starts_it(tmp_path):
    """``python -m r1core.cli`` (what torchrun runs) parses and refuses a bad key."""
    result = subprocess.run(
        [sys.executable, "-m", "r1core.cli", "train", "parallel.tensr=2"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert result.returncode == cli.EXIT_CONFIG_ERROR
    assert "parallel.tensr" in result.stderr and "Did you mean: 'tensor'?" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_usage_errors():
    with pytest.raises(SystemExit) as raised:
        cli.main([])
    assert raised.value.code == 2


@pytest.fixture
def failing_module(tmp_path, monkeypatch):
    """A component whose run(cfg) raises what ``cfg.run.name`` says."""
    package = tmp_path / "failing_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text(textwrap.dedent("""
        from r1core.data.records import DataFormatError
        def run(cfg):
            if cfg.run.name == "bad-row":
                raise DataFormatError("traces.jsonl", 7, "field 'prompt' is missing")
            raise RuntimeError("an engine crashed")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "sft", cli.Command("failing_pkg.entry", "test", resumable=True))


def test_input_errors_inside_a_component_are_one_line(tmp_path, failing_module, monkeypatch, capsys):
    monkeypatch.delenv("R1CORE_TRACEBACK", raising=False)
    status = cli.main(["sft", f"run.output_root={tmp_path}", "run.name=bad-row"])
    assert status == cli.EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert err.strip() == "r1core sft: error: traces.jsonl:7: field 'prompt' is missing"


def test_input_error_traceback_on_request(tmp_path, failing_module, monkeypatch):
    from r1core.data.records import DataFormatError

    monkeypatch.setenv("R1CORE_TRACEBACK", "1")
    with pytest.raises(DataFormatError, match="traces.jsonl:7"):
        cli.main(["sft", f"run.output_root={tmp_path}", "run.name=bad-row"])


def test_bugs_inside_a_component_keep_their_traceback(tmp_path, failing_module):
    with pytest.raises(RuntimeError, match="an engine crashed"):
        cli.main(["sft", f"run.output_root={tmp_path}", "run.name=crash"])


def test_sft_without_traces_names_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("R1CORE_TRACEBACK", raising=False)
    status = cli.main(["sft", f"run.output_root={tmp_path}", "policy.hf_dir=/some/model"])
    assert status == cli.EXIT_CONFIG_ERROR
    assert "r1core sft needs sft.traces" in capsys.readouterr().err


def test_existing_run_folder_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("R1CORE_TRACEBACK", raising=False)
    run_dir = tmp_path / "r1core"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("{}\n")
    (run_dir / "config.yaml").write_text("the earlier run's configuration\n")
    status = cli.main(["train", f"run.output_root={tmp_path}"])
    assert status == cli.EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "already holds a run: pass --resume" in err and "Traceback" not in err
    # The earlier run's record is kept; this attempt's configuration lies beside it.
    assert (run_dir / "config.yaml").read_text() == "the earlier run's configuration\n"
    assert len(list(run_dir.glob("config.*.yaml"))) == 1
