"""The math benchmarks in the shared data folder: GSM8K, MATH-500, AIME 2024, AMC 2023.

``load_benchmark(name, split)`` returns :class:`~r1core.data.records.Problem` records with
the gold answer extracted the way each benchmark defines it:

- gsm8k: the text after ``####`` in ``answer`` (thousands separators removed); the full
  worked solution is kept in ``meta["solution"]``.
- math500: the ``answer`` field (LaTeX, as given).
- aime24: ``answer`` as an integer string (``"025"`` -> ``"25"``).
- amc23: ``answer`` (a number) as a string without a trailing ``.0``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from r1core.data.loaders import answer_to_string, load_jsonl
from r1core.data.records import Problem


def data_dir() -> Path:
    """The benchmark folder: ``$R1CORE_DATA_DIR``, else ``shared/data`` beside the repository
    (``<repo>/../shared/data``), else inside it (``<repo>/shared/data``)."""
    env = os.environ.get("R1CORE_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo.parent / "shared" / "data", repo / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


_GSM8K_NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")


def gsm8k_gold(answer: Any) -> str:
    """The final answer of a GSM8K solution: what follows the last ``####``, commas removed."""
    if not isinstance(answer, str):
        raise TypeError(f"expected a string, got {type(answer).__name__}")
    if "####" not in answer:
        raise ValueError("no '####' final-answer marker in the solution")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not _GSM8K_NUMBER.match(gold):
        raise ValueError(f"final answer {gold!r} after '####' is not a number")
    return gold


def aime_gold(answer: Any) -> str:
    """AIME answers are integers 0-999, sometimes zero-padded (``"025"``)."""
    text = answer_to_string(answer)
    if not re.fullmatch(r"\d{1,3}", text):
        raise ValueError(f"AIME answer {text!r} is not an integer in 0-999")
    return str(int(text))


@dataclass(frozen=True)
class BenchmarkSpec:
    """folder: sub-folder of :func:`data_dir`. splits: available split files.
    fields: the loader's field mapping. gold: raw answer -> gold string."""

    folder: str
    splits: tuple[str, ...]
    fields: dict[str, str]
    gold: Callable[[Any], str]
    solution_field: str | None = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "gsm8k": BenchmarkSpec("gsm8k", ("train", "test"), {"problem": "question", "answer": "answer"}, gsm8k_gold, "answer"),
    "math500": BenchmarkSpec("math500", ("test",), {"problem": "problem", "answer": "answer", "id": "unique_id"}, answer_to_string),
    "aime24": BenchmarkSpec("aime24", ("test",), {"problem": "problem", "answer": "answer", "id": "id"}, aime_gold),
    "amc23": BenchmarkSpec("amc23", ("test",), {"problem": "problem", "answer": "answer", "id": "id"}, answer_to_string),
}


def load_benchmark(name: str, split: str = "test", *, root: str | os.PathLike | None = None) -> list[Problem]:
    """Problems of benchmark ``name`` (``gsm8k``, ``math500``, ``aime24``, ``amc23``).

    split: ``test`` for all; ``train`` also for gsm8k. root: the data folder (default
    :func:`data_dir`). Ids are ``"<name>/<split>/<source id or row index>"``.
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; valid: {', '.join(sorted(BENCHMARKS))}")
    spec = BENCHMARKS[name]
    if split not in spec.splits:
        raise ValueError(f"benchmark {name!r} has no split {split!r}; valid: {', '.join(spec.splits)}")
    path = Path(root if root is not None else data_dir()) / spec.folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} not found; set R1CORE_DATA_DIR to the data folder")
    problems = load_jsonl(path, spec.fields, id_prefix=f"{name}/{split}/", answer_transform=spec.gold)
    if spec.solution_field is not None:
        # GSM8K's answer field is the worked solution; keep it beside the extracted gold.
        rows = load_jsonl(path, spec.fields, id_prefix=f"{name}/{split}/", answer_transform=str, keep_meta=False)
        problems = [Problem(p.id, p.problem, p.answer, {**p.meta, "solution": r.answer}) for p, r in zip(problems, rows)]
    return problems
