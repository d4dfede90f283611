"""Clear errors for optional dependencies that are not installed."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """Raised when a feature needs an optional dependency group that is not installed."""


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise an error naming the pip extra that provides it.

    Example: ``require("megatron.core", extra="policy")`` raises
    ``MissingExtraError: r1core.models needs megatron.core: pip install 'r1core[policy]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        what = feature or "this feature"
        raise MissingExtraError(
            f"{what} needs the module {module!r}, which is not installed: "
            f"pip install 'r1core[{extra}]'  (import failed with: {error})"
        ) from error
