"""Typed run configuration: dataclass defaults, then a YAML file, then dotted overrides.

``load_config(RunConfig, "run.yaml", ["parallel.tensor=2"])`` returns a ``RunConfig``
instance; an unknown or mistyped key raises :class:`ConfigError` naming the full dotted key
before any work starts. ``dump_config`` writes the resolved configuration as YAML.
"""

from r1core.config.loader import ConfigError, config_to_dict, dump_config, load_config, parse_overrides
from r1core.config.run import LoggingConfig, RunConfig, RunSection

__all__ = [
    "ConfigError",
    "LoggingConfig",
    "RunConfig",
    "RunSection",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_overrides",
]
