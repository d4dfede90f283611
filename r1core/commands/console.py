"""The console of a run: r1core's own messages at ``logging.level``, the libraries' at WARNING
with their known-harmless messages dropped (all of it at INFO with ``logging.verbose``), and
one progress bar counted in steps.

Only global rank 0 draws the bar and prints r1core's INFO messages; other ranks print
warnings and errors, each line prefixed with its rank.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Optional

from r1core.trainer.run_logger import LoggingConfig

log = logging.getLogger("r1core")

# Libraries whose loggers a quiet console holds at WARNING (their INFO start-up chatter is
# tens of lines per engine).
THIRD_PARTY_LOGGERS = ("vllm", "megatron", "transformers", "torch", "urllib3", "filelock", "httpx", "datasets",
                       "huggingface_hub", "matplotlib", "PIL", "numexpr", "triton", "tensorboard")

# Python warnings that say nothing a user of a CPU or GPU run can act on: Megatron-Core
# announcing the optional NVIDIA packages it falls back from, and its own deprecation notes.
HARMLESS_WARNINGS = (
    (r"(Transformer Engine|Apex) (and Apex )?(is|are) not installed", "megatron"),
    (r"full scope is deprecated", "megatron"),
    (r"torch_dtype.* is deprecated", "transformers"),
)


class _TqdmHandler(logging.StreamHandler):
    """Writes through ``tqdm.write`` so a message never splits the progress bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise
            self.handleError(record)


def configure_console(section: LoggingConfig, *, rank: int = 0) -> None:
    """Set up the process's logging for a run from the ``logging`` section (call once, before
    the libraries are imported where possible: vLLM reads its settings at import)."""
    verbose = section.verbose
    level = getattr(logging, section.level.upper())
    own = logging.getLogger("r1core")
    for handler in list(own.handlers):
        own.removeHandler(handler)
    handler = _TqdmHandler(sys.stderr)
    prefix = "" if rank == 0 else f"[rank {rank}] "
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    own.addHandler(handler)
    own.setLevel(level if rank == 0 else max(level, logging.WARNING))
    own.propagate = False
    library_level = logging.INFO if verbose else logging.WARNING
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=library_level, format=f"{prefix}%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(library_level)
    if not verbose:
        for message, module in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*{message}", module=module)
        # transformers' and huggingface_hub's own bars ("Writing model shards") would sit
        # under the run's bar and say nothing about progress.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # W&B's banner; the run logger names the W&B run in one line instead.
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
        try:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            transformers_logging.set_verbosity_warning()
        except ImportError:
            pass
    # vLLM's engine may run in a process of its own, which reads its logging settings from
    # the environment; the rollout module owns which of its messages are harmless.
    from r1core.rollout.vllm_rollout import configure_vllm_logging

    configure_vllm_logging(verbose=verbose)


class Progress:
    """One bar over a run's steps (cold-start SFT steps, RL steps, evaluations), drawn on
    global rank 0 when ``enabled``; every ``advance`` moves it by whole steps, so it ends at
    exactly 100% when the plan was right. Messages (:meth:`note`) print above the bar."""

    def __init__(self, enabled: bool, description: str = "r1core") -> None:
        self.enabled = enabled
        self._bar: Any = None
        self.description = description
        self.total = 0
        self.done = 0

    def plan(self, total: int, done: int = 0) -> None:
        """Set the number of steps of the whole run (``done`` of them already behind, as in a
        resumed run)."""
        self.total, self.done = total, done
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._bar is None:
            # Redrawn often on a terminal; in a log file (a batch job's) every redraw is text.
            interval = 0.1 if sys.stderr.isatty() else 30.0
            self._bar = tqdm(total=total, initial=done, desc=self.description, unit="step", dynamic_ncols=True,
                             file=sys.stderr, smoothing=0.1, mininterval=interval)
        else:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def advance(self, steps: int = 1, status: Optional[str] = None) -> None:
        """``steps`` more steps done; ``status`` shows beside the bar."""
        self.done += steps
        if self._bar is None:
            return
        if status:
            self._bar.set_postfix_str(status, refresh=False)
        self._bar.update(steps)

    def note(self, message: str, *args: Any) -> None:
        """An INFO message from r1core, above the bar (``logging.level`` decides if it shows)."""
        log.info(message, *args)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
