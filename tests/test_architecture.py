"""The package layering of ARCHITECTURE.md holds: a package imports only from packages below
it, at module level or inside a function (a function-local import of a higher package would
hide an upward dependency). Imports of third-party packages are not checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a module may import from its own package and from packages earlier in this
# list. `r1core.kernels` is the installed name of the top-level kernels/ folder.
LAYERS = [
    "r1core._extras", "r1core._registry", "r1core.kernels", "r1core.ops", "r1core.testing",
    "r1core.parallel", "r1core.batch",
    "r1core.rewards", "r1core.data", "r1core.eval",
    "r1core.algos",
    "r1core.models", "r1core.rollout",
    "r1core.trainer",
    "r1core.config",
    "r1core.commands", "r1core.launch", "r1core.cli",
]


def _package(module: str) -> str:
    for index in range(len(LAYERS) - 1, -1, -1):
        name = LAYERS[index]
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md; add it to LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "r1core").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "kernels").glob("*.py")):
        name = "r1core.kernels" if path.stem == "__init__" else f"r1core.kernels.{path.stem}"
        out[name] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return [(name, line) for name, line in found if name == "r1core" or name.startswith("r1core.")]


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"r1core"}))
def test_imports_point_down_the_layers(module):
    own = _package(module)
    upward = []
    for name, line in _imports(module, MODULES[module]):
        if name == "r1core":
            continue
        target = _package(name)
        if LAYERS.index(target) > LAYERS.index(own):
            upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {name} ({target} is above {own})")
    assert not upward, "\n".join(upward)


def _resolved_imports(module: str) -> set[str]:
    """The r1core modules ``module`` imports (``from package import name`` counts as an import
    of ``package.name`` when that is a module)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return {name for name in out if name in MODULES and name != module}


def test_no_two_modules_import_each_other():
    imports = {module: _resolved_imports(module) for module in MODULES}
    pairs = sorted({tuple(sorted((a, b))) for a, targets in imports.items() for b in targets
                    if a in imports.get(b, set()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert not pairs, pairs
