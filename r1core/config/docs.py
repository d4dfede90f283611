"""Each configuration key's documentation, read from the attribute docstrings of the section
dataclasses, and the configuration printed as YAML with that documentation as comments
(``r1core train --print-config``).

A key's documentation is the string literal written right under its field::

    interval: int = 100
    \"\"\"Save every this many optimizer steps (0: only at the end).\"\"\"

or, for a section documented in its class docstring, the ``name: text`` entry there (several
names may share one entry: ``clip_low, clip_high: ...``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import re
import textwrap
import typing
from typing import Any

from r1core.config.loader import config_to_dict

_ENTRY = re.compile(r"^(?P<names>[A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*:\s+(?P<text>.+)$")


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: documentation}`` of a dataclass (its bases' fields included); fields
    without any documentation are left out."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base is object or not dataclasses.is_dataclass(base):
            continue
        docs.update(_class_docstring_entries(base))
        docs.update(_attribute_docstrings(base))
    names = {spec.name for spec in dataclasses.fields(cls)}
    return {name: _follow_reference(name, text) for name, text in docs.items() if name in names}


_SEE = re.compile(r"^see :class:`~?(?P<path>[\w.]+)`(?P<rest>.*)$")


def _follow_reference(name: str, text: str) -> str:
    """``see :class:`~pkg.Class` (note)`` becomes that class's documentation of the same
    field, followed by the note, when the class documents it."""
    match = _SEE.match(text)
    if not match:
        return text
    module_name, _, class_name = match["path"].rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return text
    doc = field_docs(target).get(name) if dataclasses.is_dataclass(target) else None
    if not doc:
        return text
    rest = match["rest"].strip()
    return doc if rest in ("", ".") else f"{doc} {rest}"


def _attribute_docstrings(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def _class_docstring_entries(cls: type) -> dict[str, str]:
    """``name: text`` paragraphs of the class docstring (continuation lines indented)."""
    docs: dict[str, str] = {}
    current: list[str] = []
    text: list[str] = []
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        match = _ENTRY.match(line)
        if match and not line.startswith(" "):
            for name in current:
                docs[name] = " ".join(" ".join(text).split())
            current = [name.strip() for name in match["names"].split(",")]
            text = [match["text"]]
        elif current and line.startswith(" ") and line.strip():
            text.append(line.strip())
        else:
            for name in current:
                docs[name] = " ".join(" ".join(text).split())
            current, text = [], []
    for name in current:
        docs[name] = " ".join(" ".join(text).split())
    return docs


def undocumented_keys(schema_cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of ``schema_cls`` (nested sections included) that have no documentation."""
    missing = []
    docs = field_docs(schema_cls)
    hints = typing.get_type_hints(schema_cls)
    for spec in dataclasses.fields(schema_cls):
        key = f"{prefix}{spec.name}"
        kind = hints.get(spec.name)
        if dataclasses.is_dataclass(kind):
            missing += undocumented_keys(kind, key + ".")  # type: ignore[arg-type]
        elif spec.name not in docs:
            missing.append(key)
    return missing


def describe_config(config: Any, width: int = 96) -> str:
    """``config`` (a dataclass instance) as YAML, each key preceded by its documentation as
    ``#`` comments; the text loads back (``load_config``) to an equal configuration."""
    import yaml

    values = config_to_dict(config)
    lines: list[str] = []

    def scalar(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("\n...").strip()

    def walk(node: Any, data: dict[str, Any], indent: int) -> None:
        docs = field_docs(type(node))
        pad = " " * indent
        for spec in dataclasses.fields(node):
            value = getattr(node, spec.name)
            doc = docs.get(spec.name, "")
            if doc:
                for row in textwrap.wrap(doc, width=max(width - indent - 2, 40)):
                    lines.append(f"{pad}# {row}")
            if dataclasses.is_dataclass(value):
                lines.append(f"{pad}{spec.name}:")
                walk(value, data[spec.name], indent + 2)
            elif isinstance(data[spec.name], dict) and data[spec.name]:
                lines.append(f"{pad}{spec.name}:")
                for key, item in data[spec.name].items():
                    lines.append(f"{pad}  {scalar(key)}: {scalar(item)}")
            else:
                lines.append(f"{pad}{spec.name}: {scalar(data[spec.name])}")
            if indent == 0:
                lines.append("")

    walk(config, values, 0)
    return "\n".join(lines).rstrip() + "\n"
