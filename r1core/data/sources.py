"""Problems from the run's ``data.train_files`` / ``data.eval_files`` entries.

An entry is a shipped benchmark by name (``gsm8k``, ``gsm8k:train``, ``math500``; see
:mod:`r1core.data.benchmarks`) or a ``.jsonl`` / ``.parquet`` file read with the run's field
mapping and gold format (:mod:`r1core.data.loaders`, :mod:`r1core.data.golds`). Benchmarks
keep their own fields and golds; the mapping applies to files only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping, Sequence

from r1core.data.benchmarks import load_benchmark, parse_benchmark_name
from r1core.data.golds import gold_format
from r1core.data.loaders import load_problems
from r1core.data.records import DataFormatError, Problem


def load_source(entry: str, *, fields: Mapping[str, str] | None = None, answer_format: str = "auto",
                default_split: str = "test", id_prefix: str | None = None) -> list[Problem]:
    """The problems of one entry. ``default_split`` is the split of a benchmark named without
    one (``train`` for training data where the benchmark has it, ``test`` for evaluation).

    Raises :class:`DataFormatError` naming the entry (unknown benchmark, malformed row, empty
    file) and ``FileNotFoundError`` for a missing file."""
    try:
        named = parse_benchmark_name(entry, default_split)
    except ValueError as error:
        raise DataFormatError(entry, None, str(error)) from None
    if named is not None:
        return load_benchmark(*named)
    return load_problems(entry, fields, answer_transform=gold_format(answer_format), id_prefix=id_prefix)


def load_sources(entries: Sequence[str], *, fields: Mapping[str, str] | None = None, answer_format: str = "auto",
                 default_split: str = "test") -> list[Problem]:
    """The problems of every entry, in order. Ids are ``<file stem>/<row id>`` (benchmarks:
    ``<name>/<split>/<id>``); two files with the same stem are told apart by their position
    in ``entries`` (``<position>:<stem>/...``), so every id stays unique."""
    stems = [Path(entry).stem for entry in entries]
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for position, entry in enumerate(entries):
        prefix = f"{position}:{stems[position]}/" if stems.count(stems[position]) > 1 else None
        for problem in load_source(entry, fields=fields, answer_format=answer_format, default_split=default_split,
                                   id_prefix=prefix):
            if problem.id in seen:
                raise DataFormatError(entry, None, f"problem id {problem.id!r} is also in {seen[problem.id]}; "
                                                   "list each benchmark split once")
            seen[problem.id] = entry
            problems.append(problem)
    return problems


def hold_out(problems: Sequence[Problem], count: int, *, seed: int) -> tuple[list[Problem], list[Problem]]:
    """A seeded split of ``problems`` into (training, ``count`` held-out) lists, for runs that
    name training files but no evaluation files. Both keep the source order."""
    if count <= 0:
        return list(problems), []
    if count >= len(problems):
        raise DataFormatError("data.train_files", None, f"cannot hold out {count} of {len(problems)} problems for "
                                                        "evaluation; lower data.num_eval or give data.eval_files")
    held = set(random.Random(seed).sample(range(len(problems)), count))
    return ([p for i, p in enumerate(problems) if i not in held], [p for i, p in enumerate(problems) if i in held])
