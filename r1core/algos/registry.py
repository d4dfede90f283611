"""The registry type of the algorithm components (defined in :mod:`r1core._registry` so that
packages without torch-heavy imports, such as :mod:`r1core.data`, can use it too)."""

from r1core._registry import Registry

__all__ = ["Registry"]
