"""Loading problems from jsonl and parquet files with a field mapping.

Every malformed row raises :class:`~r1core.data.records.DataFormatError` naming the file
and the line (1-based; for parquet the row number, 1-based): bad JSON, a row that is not
an object, a missing field, or a field of the wrong type. A file without a single row is an
error too.

The field mapping names the source field of each part of a :class:`Problem`: ``problem``
(also spelt ``prompt``), ``answer``, and optionally ``id`` and ``system``. Without a
``problem`` entry the first of ``problem``, ``question``, ``prompt`` present in the file's
first row is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from r1core._extras import require
from r1core.data.golds import answer_to_string
from r1core.data.records import DataFormatError, Problem

# Fields a Problem needs from a source row. ``id`` and ``system`` are optional.
DEFAULT_FIELDS = {"answer": "answer"}
# Where the problem text usually is, in order of preference, when the mapping does not say.
PROBLEM_FIELD_CANDIDATES = ("problem", "question", "prompt")
MAPPABLE = ("problem", "answer", "id", "system")

AnswerTransform = Callable[[Any], str]

__all__ = ["DEFAULT_FIELDS", "answer_to_string", "load_jsonl", "load_parquet", "load_problems", "normalize_fields",
           "read_rows", "rows_to_problems"]


def normalize_fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    """``fields`` with ``prompt`` spelt ``problem``; raises ``ValueError`` for other keys."""
    mapping = dict(fields or {})
    if "prompt" in mapping:
        if "problem" in mapping:
            raise ValueError("fields may map 'prompt' or 'problem' (the same thing), not both")
        mapping["problem"] = mapping.pop("prompt")
    unknown = set(mapping) - set(MAPPABLE)
    if unknown:
        raise ValueError(f"fields may map only 'prompt' (or 'problem'), 'answer', 'id' and 'system', got {sorted(unknown)}")
    for key, value in mapping.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"fields.{key} must name a source field, got {value!r}")
    return {**DEFAULT_FIELDS, **mapping}


def _problem_field(path: str, line: int, row: dict) -> str:
    for candidate in PROBLEM_FIELD_CANDIDATES:
        if candidate in row:
            return candidate
    raise DataFormatError(path, line, f"no problem field: none of {', '.join(map(repr, PROBLEM_FIELD_CANDIDATES))} "
                                      f"in the row (map one with fields.prompt); row has {sorted(row)}")


def rows_to_problems(
    rows: Iterable[tuple[int, Any]],
    path: str,
    fields: Mapping[str, str],
    *,
    id_prefix: str,
    answer_transform: AnswerTransform | None,
    keep_meta: bool,
) -> list[Problem]:
    """Map ``(line_number, row)`` pairs to problems, raising on the first malformed row or
    when there is no row at all."""
    try:
        mapping = normalize_fields(fields)
    except ValueError as error:
        raise DataFormatError(path, None, str(error)) from None
    problems: list[Problem] = []
    seen: set[str] = set()
    for line, row in rows:
        if not isinstance(row, dict):
            raise DataFormatError(path, line, f"expected a JSON object, got {type(row).__name__}")
        if "problem" not in mapping:
            mapping["problem"] = _problem_field(path, line, row)
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
        system = None
        if "system" in mapping:
            system = row.get(mapping["system"])
            if system is not None and not isinstance(system, str):
                raise DataFormatError(path, line, f"field {mapping['system']!r} (the system prompt) must be a string, "
                                                  f"got {type(system).__name__}")
            system = system or None
        used = {mapping["problem"], mapping["answer"], mapping.get("id"), mapping.get("system")}
        meta = {k: v for k, v in row.items() if k not in used} if keep_meta else {}
        problems.append(Problem(problem_id, text, answer, meta, system))
    if not problems:
        raise DataFormatError(path, None, "the file holds no rows")
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

    fields: source field of ``problem`` (or ``prompt``), ``answer`` and optionally ``id``
        and ``system``, e.g. ``{"prompt": "question", "answer": "final"}`` (defaults: the
        first of ``problem``/``question``/``prompt`` present, ``answer``; without ``id`` the
        id is the 0-based row index).
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


def read_rows(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line, row)`` pairs of a ``.jsonl`` or ``.parquet`` file as they are (rows not
    checked; blank jsonl lines skipped); raises :class:`DataFormatError` for bad JSON, an
    unreadable or unknown file type, or a file without rows."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = list(_jsonl_rows(path))
    elif suffix in (".parquet", ".pq"):
        parquet = require("pyarrow.parquet", extra="train", feature="reading parquet files")
        try:
            rows = list(enumerate(parquet.read_table(path).to_pylist(), start=1))
        except Exception as error:  # pyarrow raises several types for unreadable files
            raise DataFormatError(path, None, f"not a readable parquet file ({error})") from None
    else:
        raise DataFormatError(path, None, f"unknown data file type {suffix!r}; expected .jsonl or .parquet")
    if not rows:
        raise DataFormatError(path, None, "the file holds no rows")
    return rows


def load_problems(path: str | os.PathLike, fields: Mapping[str, str] | None = None, **kwargs: Any) -> list[Problem]:
    """:func:`load_jsonl` or :func:`load_parquet` by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return load_jsonl(path, fields, **kwargs)
    if suffix in (".parquet", ".pq"):
        return load_parquet(path, fields, **kwargs)
    raise DataFormatError(os.fspath(path), None, f"unknown data file type {suffix!r}; expected .jsonl or .parquet")
