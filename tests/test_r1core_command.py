"""The ``r1core`` command: configuration checked before any work, dispatch to components,
clear errors for components not present, ``launch`` delegation."""

from __future__ import annotations

import json
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
    monkeypatch.setenv("WORLD_SIZE", "2")  # the layout is checked against the world size
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


@pytest.fixture
def hf_dir(tmp_path):
    """A folder with a small Qwen2 ``config.json`` (what the configuration checks read)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "tie_word_embeddings": True,
    }))
    return folder


def test_sft_without_traces_names_the_key(tmp_path, monkeypatch, capsys, hf_dir):
    monkeypatch.delenv("R1CORE_TRACEBACK", raising=False)
    status = cli.main(["sft", f"run.output_root={tmp_path}", f"policy.hf_dir={hf_dir}"])
    assert status == cli.EXIT_CONFIG_ERROR
    assert "r1core sft needs sft.traces" in capsys.readouterr().err


def _traces(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


ROW = b'{"prompt": "1+1=", "response": "2"}\n'

# Every bad input a user reported, as (command, arguments, a fragment the one line must hold).
# Arguments may use {hf_dir} (a readable model folder) and {tmp} (the test's folder).
BAD_INPUTS = [
    ("train", ["trainer.prompts_per_step=0"], "trainer.prompts_per_step must be >= 1"),
    ("train", ["trainer.samples_per_prompt=0"], "trainer.samples_per_prompt must be >= 1"),
    ("train", ["trainer.max_response_tokens=-5"], "trainer.max_response_tokens must be >= 1"),
    ("train", ["trainer.steps=-1"], "trainer.steps must be >= 1"),
    ("train", ["reward.num_workers=0"], "reward.num_workers must be >= 1"),
    ("train", ["reward.weights.no_such_reward=1.0"], "reward.weights.no_such_reward: unknown reward"),
    ("train", ["checkpoint.interval=-1"], "checkpoint.interval must be >= 0"),
    ("train", ["checkpoint.keep_last=-1"], "checkpoint.keep_last must be >= 0"),
    ("train", ["checkpoint.stop_signals=[SIGKILL]"], "checkpoint.stop_signals: 'SIGKILL'"),
    ("train", ["policy.hf_dir=/nonexistent"], "policy.hf_dir='/nonexistent' is not a folder"),
    ("train", ["policy.hf_dir={tmp}"], "no Hugging Face config.json"),
    ("train", ["parallel.tensor=3"], "world size 1 is not divisible by tensor x pipeline x context = 3"),
    ("train", ["embedded.model.num_attention_heads=3"], "embedded.model.num_attention_heads=3"),
    ("train", ["trainer.max_response_tokens=600"], "leaves no room for the prompt within the embedded model's"),
    ("train", ["logging.level=loud"], "logging.level must be one of"),
    ("train", ["run.name=a/b"], "run.name must be a plain folder name"),
    ("sft", ["policy.hf_dir={hf_dir}", "sft.traces={tmp}/empty.jsonl"], "the file holds no rows"),
    ("sft", ["policy.hf_dir={hf_dir}", "sft.traces={tmp}/latin1.jsonl"], "line 2 is not UTF-8"),
    ("sft", ["policy.hf_dir={hf_dir}", "sft.traces={tmp}/traces.csv"], "expected a .jsonl file"),
    ("sft", ["policy.hf_dir={hf_dir}", "sft.traces={tmp}/huge.jsonl"], "line 2 is longer than sft.max_row_bytes=1048576"),
    ("sft", ["policy.hf_dir={hf_dir}", "sft.traces={tmp}/missing.jsonl"], "no such file"),
    ("sft", ["policy.hf_dir={hf_dir}", "--resume"], "unrecognized arguments: --resume"),
]


@pytest.fixture
def bad_files(tmp_path):
    _traces(tmp_path, "empty.jsonl", b"")
    _traces(tmp_path, "latin1.jsonl", ROW + '{"prompt": "caf\u00e9", "response": "x"}\n'.encode("latin-1"))
    _traces(tmp_path, "traces.csv", b"prompt,response\n1+1=,2\n")
    # One valid row of 2 MB (a long response): read a line at a time up to the bound, never whole.
    _traces(tmp_path, "huge.jsonl", ROW + b'{"prompt": "1+1=", "response": "' + b"2" * (2 << 20) + b'"}\n')
    return tmp_path


@pytest.mark.parametrize(("command", "arguments", "fragment"), BAD_INPUTS, ids=[" ".join(a) for _, a, _ in BAD_INPUTS])
def test_each_bad_input_is_one_line_and_exit_2_before_any_work(command, arguments, fragment, tmp_path, hf_dir,
                                                               bad_files, monkeypatch, capsys):
    monkeypatch.delenv("R1CORE_TRACEBACK", raising=False)
    root = tmp_path / "runs"
    arguments = [a.format(hf_dir=hf_dir, tmp=bad_files) for a in arguments]
    try:
        status = cli.main([command, f"run.output_root={root}", *arguments])
    except SystemExit as usage:  # argparse refuses an option the command does not have
        status = usage.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_CONFIG_ERROR
    assert len(err) == 1 or (status == 2 and err[-1].startswith(f"r1core {command}: error:")), err
    assert fragment in err[-1], err
    # Nothing was built or written, so the corrected command runs as a plain run.
    assert not root.exists()


# The data and eval sections check their own values (their dataclasses belong to the data and
# evaluation packages).
SECTION_OWNED_BAD_INPUTS = [
    ("train", ["data.num_train=0"], "data.num_train"),
    ("train", ["eval.every=0"], "eval.every"),
    ("eval", ["policy.hf_dir={hf_dir}", "eval.benchmark=gsm9k"], "gsm9k"),
]


@pytest.mark.parametrize(("command", "arguments", "fragment"), SECTION_OWNED_BAD_INPUTS,
                         ids=[" ".join(a) for _, a, _ in SECTION_OWNED_BAD_INPUTS])
def test_data_and_eval_section_inputs_are_refused_before_any_work(command, arguments, fragment, tmp_path, hf_dir,
                                                                  monkeypatch, capsys, entry_module):
    monkeypatch.delenv("R1CORE_TRACEBACK", raising=False)
    # Whatever the configuration lets through reaches a stand-in that does no work.
    monkeypatch.setitem(cli.COMMANDS, command, cli.Command(f"{entry_module}.good", "test", resumable=True))
    root = tmp_path / "runs"
    status = cli.main([command, f"run.output_root={root}", *[a.format(hf_dir=hf_dir) for a in arguments]])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_CONFIG_ERROR and len(err) == 1 and fragment in err[0]
    assert not root.exists()


def test_bad_input_through_the_console_script_is_one_line_without_loading_a_model(tmp_path):
    """The installed entry point, as a user runs it: one line, exit 2, quickly (no model, no
    engine: the check comes before any of them is imported)."""
    result = subprocess.run([sys.executable, "-m", "r1core.cli", "train", "parallel.tensor=3"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == cli.EXIT_CONFIG_ERROR
    assert result.stderr.strip().splitlines() == [
        "r1core train: configuration error: impossible parallel layout: world size 1 is not divisible by tensor x "
        "pipeline x context = 3 x 1 x 1 = 3"]
    assert "vllm" not in result.stderr.lower() and not (tmp_path / "runs").exists()


def test_missing_optional_logger_is_named_with_status_69(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    status = cli.main(["train", f"run.output_root={tmp_path}", "logging.wandb.enabled=true"])
    assert status == cli.EXIT_UNAVAILABLE
    assert "pip install wandb" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_print_config_documents_every_key(capsys):
    from r1core.config import RunConfig, load_config
    from r1core.config.docs import undocumented_keys

    assert undocumented_keys(RunConfig) == []
    assert cli.main(["train", "--print-config", "checkpoint.interval=7"]) == 0
    out = capsys.readouterr().out
    assert "  # Save every this many optimizer steps (0: only at the end).\n  interval: 7\n" in out
    assert "# Signals that stop the run gracefully" in out
    # The commented YAML loads back to the same configuration.
    assert load_config(RunConfig, None, ["checkpoint.interval=7"]) == _load_text(out)


def _load_text(text: str):
    import tempfile

    from r1core.config import RunConfig, load_config

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    return load_config(RunConfig, handle.name)


def test_resume_flags(tmp_path, monkeypatch, entry_module):
    monkeypatch.setitem(cli.COMMANDS, "train", cli.Command(f"{entry_module}.good", "test", resumable=True))
    root = tmp_path / "runs"
    root.mkdir()
    assert cli.main(["train", f"run.output_root={root}", "--resume-or-start"]) == 0
    assert "resume=True" in (root / "received.txt").read_text()
    saved = (root / "r1core" / "config.yaml").read_text()
    assert "start_if_none: true" in saved and "resume: true" in saved
    assert cli.main(["train", f"run.output_root={root}", "checkpoint.start_if_none=true"]) == cli.EXIT_CONFIG_ERROR


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


# ---------------------------------------------------------------------- signals


def test_stop_signals_are_taken_by_the_watcher_not_the_default_action():
    import os
    import signal
    import time

    from r1core.commands.lifecycle import WATCHED_SIGNALS, RunControl, active_control
    from r1core.trainer.checkpoint import STOP_SIGNAL_NAMES

    assert set(STOP_SIGNAL_NAMES) == set(WATCHED_SIGNALS)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with RunControl(["SIGTERM", "SIGUSR1"], timeout_s=60) as control:
        assert active_control() is control and not control.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the control
        deadline = time.monotonic() + 10
        while not control.stop_requested() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.signal_name == "SIGTERM"
        # A watched signal that is not a stop signal interrupts, as Ctrl-C does.
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(10)
        assert control.exit_status_for_interrupt() == 128 + signal.SIGHUP
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
    # The stop's deadline ended with the run: it must not exit this process 60 s later.
    assert control._deadline is not None and control._deadline.finished.is_set()
    assert not active_control().stop_requested()


STOP_TIMEOUT_SCRIPT = """
import os, signal, sys, time
from r1core.commands.lifecycle import RunControl
with RunControl(["SIGUSR1"], timeout_s=1.0):
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(60)  # a step that never ends: the stop's time limit ends the process
"""


def test_a_stop_that_does_not_finish_in_time_exits_with_128_plus_the_signal():
    import time

    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", STOP_TIMEOUT_SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 128 + 10  # SIGUSR1
    assert time.monotonic() - start < 30
    assert "no checkpoint within checkpoint.stop_timeout_s=1 s of SIGUSR1" in result.stderr
