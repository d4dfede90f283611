"""Loading problems from jsonl and parquet files with a field mapping.

Every malformed row raises :class:`~r1core.data.records.DataFormatError` naming the file
and the line (1-based; for parquet the row number, 1-based): bad JSON, a row that is not
an object, a missing field, or a field of the wrong type.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from r1core._extras import require
from r1core.data.records import DataFormatError, Problem

# Fields a Problem needs from a source row. ``id`` is optional (the row number otherwise).
DEFAULT_FIELDS = {"problem": "problem", "answer": "answer"}

AnswerTransform = Callable[[Any], str]


def answer_to_string(value: Any) -> str:
    """Gold answers as strings: strings are stripped; integral floats lose their ``.0``
    (AMC's ``27.0`` -> ``"27"``); other numbers use ``repr``-free ``str``."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an answer")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"non-finite number {value!r}")
        return str(int(value)) if value.is_integer() else str(value)
    raise TypeError(f"expected a string or a number, got {type(value).__name__}")


def rows_to_problems(
    rows: Iterable[tuple[int, Any]],
    path: str,
    fields: Mapping[str, str],
    *,
    id_prefix: str,
    answer_transform: AnswerTransform | None,
    keep_meta: bool,
) -> list[Problem]:
    """Map ``(line_number, row)`` pairs to problems, raising on the first malformed row."""
    mapping = {**DEFAULT_FIELDS, **fields}
    unknown = set(mapping) - {"problem", "answer", "id"}
    if unknown:
        raise ValueError(f"fields may map only 'problem', 'answer' and 'id', got {sorted(unknown)}")
    problems: list[Problem] = []
    seen: set[str] = set()
    for line, row in rows:
        if not isinstance(row, dict):
            raise DataFormatError(path, line, f"expected a JSON object, got {type(row).__name__}")
        for key in ("problem", "answer"):
            if mapping[key] not in row or row[mapping[key]] is None:
                raise DataFormatError(path, line, f"missing field {mapping[key]!r} (the {key}); row has {sorted(row)}")
        text = row[mapping["problem"]]
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(path, line, f"field {mapping['problem']!r} must be a non-empty string, got {type(text).__name__}")
        raw_answer = row[mapping["answer"]]
        try:
            answer = answer_transform(raw_answer) if answer_transform is not None else answer_to_string(raw_answer)
        except (TypeError, ValueError) as error:
            raise DataFormatError(path, line, f"field {mapping['answer']!r}: {error}") from None
        if not answer:
            raise DataFormatError(path, line, f"field {mapping['answer']!r} gives an empty answer")
        if "id" in mapping:
            if mapping["id"] not in row or row[mapping["id"]] is None:
                raise DataFormatError(path, line, f"missing field {mapping['id']!r} (the id)")
            raw_id = row[mapping["id"]]
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                raise DataFormatError(path, line, f"field {mapping['id']!r} must be a string or an integer, got {type(raw_id).__name__}")
            problem_id = f"{id_prefix}{raw_id}"
        else:
            problem_id = f"{id_prefix}{line - 1}"
        if problem_id in seen:
            raise DataFormatError(path, line, f"duplicate id {problem_id!r}")
        seen.add(problem_id)
        used = {mapping["problem"], mapping["answer"], mapping.get("id")}
        meta = {k: v for k, v in row.items() if k not in used} if keep_meta else {}
        problems.append(Problem(problem_id, text, answer, meta))
    return problems


def _jsonl_rows(path: str) -> Iterable[tuple[int, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, line_number, f"invalid JSON ({error.msg} at column {error.colno})") from None


def load_jsonl(
    path: str | os.PathLike,
    fields: Mapping[str, str] | None = None,
    *,
    id_prefix: str | None = None,
    answer_transform: AnswerTransform | None = None,
    keep_meta: bool = True,
) -> list[Problem]:
    """Problems from a JSON-lines file (blank lines are skipped).

    fields: source field of ``problem``, ``answer`` and optionally ``id``, e.g.
        ``{"problem": "question", "answer": "final"}`` (defaults: ``problem``, ``answer``;
        without ``id`` the id is the 0-based row index).
    id_prefix: prepended to every id (default: the file's stem and a slash).
    answer_transform: turns the raw answer value into the gold string (default
        :func:`answer_to_string`); raise ``ValueError``/``TypeError`` to reject a row.
    keep_meta: keep the row's other fields in ``Problem.meta``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")
    prefix = f"{Path(path).stem}/" if id_prefix is None else id_prefix
    return rows_to_problems(
        _jsonl_rows(path), path, fields or {}, id_prefix=prefix, answer_transform=answer_transform, keep_meta=keep_meta
    )


def load_parquet(
    path: str | os.PathLike,
    fields: Mapping[str, str] | None = None,
    *,
    id_prefix: str | None = None,
    answer_transform: AnswerTransform | None = None,
    keep_meta: bool = True,
) -> list[Problem]:
    """Problems from a parquet file; arguments as :func:`load_jsonl` (line = 1-based row)."""
    parquet = require("pyarrow.parquet", extra="train", feature="r1core.data.load_parquet")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")
    try:
        rows = parquet.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for unreadable files
        raise DataFormatError(path, None, f"not a readable parquet file ({error})") from None
    prefix = f"{Path(path).stem}/" if id_prefix is None else id_prefix
    return rows_to_problems(
        enumerate(rows, start=1), path, fields or {}, id_prefix=prefix, answer_transform=answer_transform,
        keep_meta=keep_meta,
    )


def load_problems(path: str | os.PathLike, fields: Mapping[str, str] | None = None, **kwargs: Any) -> list[Problem]:
    """:func:`load_jsonl` or :func:`load_parquet` by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return load_jsonl(path, fields, **kwargs)
    if suffix in (".parquet", ".pq"):
        return load_parquet(path, fields, **kwargs)
    raise ValueError(f"unknown data file type {suffix!r} for {path}; expected .jsonl or .parquet")
