"""The package's layers import one way (README "Layout"): a module imports its own package and the layers below.

Every import is read from the source: module level and inside functions, plus dotted module names in string
constants (the registry's lazy imports, the command table). There is no exceptions list.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "mirrortalk_jax"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Lowest first. Packages in one tuple share a layer and must not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("safe_paths", "base_config", "storage"),
    ("data",),
    ("objectives",),
    ("models",),
    ("configs",),  # experiment configs and released networks' specs (they may read a model module's defaults)
    ("sample",),
    ("runs",),
    ("convert",),
    ("train",),
    ("evaluate", "generate", "export"),
    ("fixtures",),
    ("demo",),
    ("commands",),
    ("cli", "main"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str | None:
    """The first component under the package ("mirrortalk_jax.models.nn.layers" -> "models")."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported name) for every import statement and dotted package name in a string constant of the
    module `module` (its source at `path`)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PACKAGE + "."):
            found.append((node.lineno, node.value.split(":")[0]))
    return found


def _against_order(path: Path, module: str) -> list[str]:
    source = _top(module)
    bad = []
    for line, target in _imports(path, module):
        top = _top(target)
        if top is not None and top != source and top in RANK and RANK[top] >= RANK[source]:
            bad.append(f"{module}:{line}: {source} imports {target} ({top})")
    return bad


def _violations() -> list[str]:
    return [v for path in sorted(ROOT.rglob("*.py")) if _top(_module_name(path)) is not None
            for v in _against_order(path, _module_name(path))]


def test_every_package_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert tops == set(RANK), f"packages without a layer: {sorted(tops - set(RANK))}; stale: {sorted(set(RANK) - tops)}"


def test_imports_go_one_way():
    bad = _violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_relative_and_string_imports(tmp_path):
    """What it must police: a function-local import, a relative import, a lazy import by name, a sibling."""
    probe = tmp_path / "probe.py"
    probe.write_text("from . import layers\n"
                     "def f():\n    from mirrortalk_jax.train import trainer\n"
                     "LAZY = {'x': 'mirrortalk_jax.runs.loader'}\n")
    bad = _against_order(probe, f"{PACKAGE}.models.probe")
    assert [b.split(": ", 1)[1] for b in bad] == ["models imports mirrortalk_jax.train.trainer (train)",
                                                  "models imports mirrortalk_jax.runs.loader (runs)"]
    probe.write_text("from mirrortalk_jax.generate import render\n")
    assert _against_order(probe, f"{PACKAGE}.evaluate.probe")  # same layer, another package
    assert not _against_order(probe, f"{PACKAGE}.commands.probe")
