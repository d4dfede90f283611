"""The math benchmarks shipped inside the package: GSM8K, MATH-500, AIME 2024, AMC 2023.

The files live in ``r1core/data/benchmark_files/`` (package data, with their licences and a
README giving their origin), so they load by name wherever r1core is installed.
``load_benchmark(name, split)`` returns :class:`~r1core.data.records.Problem` records with
the gold answer extracted the way each benchmark defines it:

- gsm8k: the text after ``####`` in ``answer`` (thousands separators removed); the full
  worked solution is kept in ``meta["solution"]``.
- math500: the ``answer`` field (LaTeX, as given).
- aime24: ``answer`` as an integer string (``"025"`` -> ``"25"``).
- amc23: ``answer`` (a number) as a string without a trailing ``.0``.

In configuration a benchmark is named ``"<name>"`` or ``"<name>:<split>"``
(:func:`parse_benchmark_name`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from r1core.data.golds import aime_gold, answer_to_string, gsm8k_gold
from r1core.data.loaders import load_jsonl
from r1core.data.records import Problem

__all__ = ["BENCHMARKS", "BenchmarkSpec", "aime_gold", "data_dir", "gsm8k_gold", "is_benchmark_name",
           "load_benchmark", "parse_benchmark_name"]


def data_dir() -> Path:
    """The folder of the shipped benchmark files (inside the installed package)."""
    return Path(__file__).resolve().parent / "benchmark_files"


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

_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".pq")


def parse_benchmark_name(text: str, default_split: str = "test") -> tuple[str, str] | None:
    """``"gsm8k"`` -> ``("gsm8k", default_split)``, ``"gsm8k:train"`` -> ``("gsm8k", "train")``;
    None for anything that is not a benchmark name (a file path). A benchmark without
    ``default_split`` gets its first split. Raises ``ValueError`` for a name-like entry that
    names no benchmark or split (no data-file suffix, no path separator)."""
    if text.lower().endswith(_DATA_SUFFIXES) or os.sep in text or "/" in text:
        return None
    name, _, split = text.partition(":")
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}: valid names are {', '.join(sorted(BENCHMARKS))}, "
                         "or give a .jsonl/.parquet file")
    spec = BENCHMARKS[name]
    if not split:
        split = default_split if default_split in spec.splits else spec.splits[0]
    if split not in spec.splits:
        raise ValueError(f"benchmark {name!r} has no split {split!r}; valid: {', '.join(spec.splits)}")
    return name, split


def is_benchmark_name(text: str) -> bool:
    """Whether ``text`` names a shipped benchmark (``"gsm8k"``, ``"math500:test"``)."""
    try:
        return parse_benchmark_name(text) is not None
    except ValueError:
        return False


def load_benchmark(name: str, split: str = "test", *, root: str | os.PathLike | None = None) -> list[Problem]:
    """Problems of benchmark ``name`` (``gsm8k``, ``math500``, ``aime24``, ``amc23``).

    split: ``test`` for all; ``train`` also for gsm8k. root: a folder laid out like
    :func:`data_dir` (default: the shipped files). Ids are
    ``"<name>/<split>/<source id or row index>"``.
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; valid: {', '.join(sorted(BENCHMARKS))}")
    spec = BENCHMARKS[name]
    if split not in spec.splits:
        raise ValueError(f"benchmark {name!r} has no split {split!r}; valid: {', '.join(spec.splits)}")
    path = Path(root if root is not None else data_dir()) / spec.folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} not found")
    problems = load_jsonl(path, spec.fields, id_prefix=f"{name}/{split}/", answer_transform=spec.gold)
    if spec.solution_field is not None:
        # GSM8K's answer field is the worked solution; keep it beside the extracted gold.
        rows = load_jsonl(path, spec.fields, id_prefix=f"{name}/{split}/", answer_transform=str, keep_meta=False)
        problems = [Problem(p.id, p.problem, p.answer, {**p.meta, "solution": r.answer}) for p, r in zip(problems, rows)]
    return problems
