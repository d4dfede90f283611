"""Assemble a typed run configuration from dataclass defaults, a YAML file and overrides.

The merge order is fixed: the schema's defaults, then the YAML file, then the dotted
command-line overrides (``trainer.lr=1e-6``), each layer replacing the one before it.
OmegaConf's structured configs do the merging and the type checks; this module turns their
exceptions into one error type, :class:`ConfigError`, whose message names the full dotted
key and, for an unknown key, the keys that are valid at that level. Nothing here starts any
work: a run that is mistyped fails before a model, a process group or a file is touched.

The returned object is an instance of the schema dataclass (``OmegaConf.to_object``), not a
``DictConfig``, so components receive plain typed dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from r1core._extras import require

SchemaT = TypeVar("SchemaT")


class ConfigError(ValueError):
    """A configuration could not be assembled; the message names the offending key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _omegaconf():
    return require("omegaconf", extra="train", feature="r1core configuration")


def _node_keys(schema_cls: type, dotted_parent: str) -> list[str]:
    """Field names of the dataclass found at ``dotted_parent`` inside ``schema_cls``."""
    node: Any = schema_cls
    for part in dotted_parent.split(".") if dotted_parent else []:
        if not dataclasses.is_dataclass(node):
            return []
        # get_type_hints resolves annotations written as strings (postponed evaluation).
        hints = typing.get_type_hints(node)
        if part not in hints:
            return []
        node = hints[part]
    if not dataclasses.is_dataclass(node):
        return []
    return sorted(f.name for f in dataclasses.fields(node))


def _translate(
    error: Exception, schema_cls: type, source: str, fallback_key: str | None = None
) -> ConfigError:
    """Turn an OmegaConf exception into a ConfigError that names the full dotted key."""
    omegaconf = _omegaconf()
    errors = omegaconf.errors
    full_key = getattr(error, "full_key", None) or fallback_key
    message = (getattr(error, "msg", None) or str(error)).split("\n", 1)[0].strip()
    if isinstance(error, errors.ConfigKeyError) and full_key:
        parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        valid = _node_keys(schema_cls, parent)
        where = f"'{parent}'" if parent else "the top level"
        listing = ", ".join(valid) if valid else "none (this section has no keys yet)"
        hint = " " + message[message.index("Did you mean") :] if "Did you mean" in message else ""
        return ConfigError(
            f"unknown configuration key '{full_key}' (from {source}).{hint} Valid keys at "
            f"{where}: {listing}",
            key=full_key,
        )
    if isinstance(error, errors.MissingMandatoryValue) and full_key:
        return ConfigError(
            f"configuration key '{full_key}' is required but was not given (from {source})",
            key=full_key,
        )
    if full_key:
        return ConfigError(
            f"bad value for configuration key '{full_key}' (from {source}): {message}", key=full_key
        )
    return ConfigError(f"invalid configuration (from {source}): {message}")


def parse_overrides(overrides: Sequence[str]) -> list[str]:
    """Check that each override has the form ``dotted.key=value`` and return them.

    A bare key, an empty key or a key with empty path parts is an error naming the override.
    """
    checked = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value", key=item)
        key = item.split("=", 1)[0].strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key or key part", key=key)
        checked.append(item)
    return checked


def _load_yaml(yaml_path: str | os.PathLike[str]) -> Any:
    omegaconf = _omegaconf()
    path = Path(yaml_path)
    if not path.is_file():
        raise ConfigError(f"configuration file {str(path)!r} does not exist")
    loaded = omegaconf.OmegaConf.load(path)
    if not isinstance(loaded, omegaconf.DictConfig):
        raise ConfigError(f"configuration file {str(path)!r} must hold a mapping at the top level")
    return loaded


def load_config(
    schema_cls: type[SchemaT],
    yaml_path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    validate: bool = True,
) -> SchemaT:
    """Build a ``schema_cls`` instance from its defaults, a YAML file and dotted overrides.

    Args:
        schema_cls: a dataclass whose fields (and nested dataclass fields) define every
            valid key and its type.
        yaml_path: optional YAML file with a mapping that mirrors the schema's nesting.
        overrides: ``["section.key=value", ...]``; values are parsed as YAML scalars or
            lists (``a.b=[1,2]``), so ``lr=1e-6`` is a float and ``flag=true`` a bool.
        validate: also run :func:`validate_config` (each section's file and cross-section
            checks); off only where the files are not meant to be on this machine.

    Returns:
        An instance of ``schema_cls`` (nested dataclasses are real instances too).

    Raises:
        ConfigError: an unknown key (message lists the valid keys at that level), a value
            whose type does not fit, a value out of its range (a section's ``__post_init__``),
            a file that is missing or unreadable (a section's ``validate()``), a required
            value left unset, or a malformed override.
    """
    omegaconf = _omegaconf()
    OmegaConf = omegaconf.OmegaConf
    if not (isinstance(schema_cls, type) and dataclasses.is_dataclass(schema_cls)):
        raise TypeError(f"schema_cls must be a dataclass type, got {schema_cls!r}")
    merged = OmegaConf.structured(schema_cls)
    layers: list[tuple[str, Any, str | None]] = []
    if yaml_path is not None:
        layers.append((f"file {str(yaml_path)!r}", _load_yaml(yaml_path), None))
    for item in parse_overrides(overrides):
        key = item.split("=", 1)[0].strip()
        try:
            layers.append((f"override {item!r}", OmegaConf.from_dotlist([item]), key))
        except Exception as error:  # OmegaConf or the YAML parser underneath it
            first_line = str(error).split("\n", 1)[0]
            raise ConfigError(f"cannot parse override {item!r}: {first_line}", key=key) from error
    merged = _start_from_presets(schema_cls, merged, [layer for _, layer, _ in layers])
    for source, layer, key in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except omegaconf.errors.OmegaConfBaseException as error:
            raise _translate(error, schema_cls, source, fallback_key=key) from error
    try:
        config = OmegaConf.to_object(merged)
    except omegaconf.errors.OmegaConfBaseException as error:
        raise _translate(error, schema_cls, "the assembled configuration") from error
    except (TypeError, ValueError, KeyError) as error:  # a schema's __post_init__ checks
        raise ConfigError(str(_reason(error))) from error
    if validate:
        validate_config(config)
    return config  # type: ignore[return-value]


def _reason(error: BaseException) -> object:
    return error.args[0] if isinstance(error, KeyError) and error.args else error


def validate_config(config: Any) -> None:
    """Run every section's ``validate()`` (the checks that read files: a model's
    ``config.json``, a data file), innermost sections first, then the root's (the checks
    across sections).

    A section's ``__post_init__`` checks its own values whenever it is built; ``validate()``
    is kept for what needs the file system or another section, so that tests and library
    code can build sections freely while a run is refused before any work.

    Raises:
        ConfigError: the first failed check, with the section's message (which names the key).
    """
    for node in _sections(config):
        check = getattr(node, "validate", None)
        if not callable(check):
            continue
        try:
            check()
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError, OSError) as error:
            raise ConfigError(str(_reason(error))) from error


def _sections(node: Any) -> list[Any]:
    """Dataclass instances inside ``node`` (``node`` included), children before parents."""
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        return []
    found: list[Any] = []
    for spec in dataclasses.fields(node):
        found += _sections(getattr(node, spec.name))
    return [*found, node]


def _start_from_presets(schema_cls: type, merged: Any, layers: Sequence[Any]) -> Any:
    """Sections whose dataclass offers presets (a ``preset`` field and a ``from_preset(name)``
    classmethod, as ``AlgorithmConfig`` does) start from the preset the layers name last, so
    that the section's other keys in the file and the overrides apply on top of the recipe."""
    OmegaConf = _omegaconf().OmegaConf
    for spec in dataclasses.fields(schema_cls):
        section = typing.get_type_hints(schema_cls).get(spec.name)
        names = {f.name for f in dataclasses.fields(section)} if dataclasses.is_dataclass(section) else set()
        if "preset" not in names or not callable(getattr(section, "from_preset", None)):
            continue
        chosen = [OmegaConf.select(layer, f"{spec.name}.preset", default=None) for layer in layers]
        chosen = [name for name in chosen if name]
        if chosen:
            try:
                base = section.from_preset(str(chosen[-1]))
            except KeyError as error:
                raise ConfigError(f"bad value for configuration key '{spec.name}.preset': {error.args[0]}",
                                  key=f"{spec.name}.preset") from None
            merged[spec.name] = OmegaConf.structured(base)
    return merged


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested ``dict`` of a dataclass instance (or mapping), enums as their names."""
    omegaconf = _omegaconf()
    if isinstance(config, Mapping):
        node = omegaconf.OmegaConf.create(dict(config))
    else:
        node = omegaconf.OmegaConf.structured(config)
    container = omegaconf.OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return container  # type: ignore[return-value]


def dump_config(config: Any, path: str | os.PathLike[str] | None = None) -> str:
    """Serialise a config dataclass instance to YAML; write it to ``path`` if given.

    The file is written atomically (temporary file, then rename), so a run directory never
    holds a half-written ``config.yaml``. Loading the YAML back with :func:`load_config`
    and the same schema gives an equal instance.
    """
    omegaconf = _omegaconf()
    text = omegaconf.OmegaConf.to_yaml(config_to_dict(config))
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    return text
