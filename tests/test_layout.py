"""The code's shape, checked so it stays: layering of the packages, file and function sizes.

- ``models/`` imports nothing from ``data/`` (except under ``TYPE_CHECKING``) and never climbs back
  into ``engine/``, ``search/``, ``cli`` or ``api``: configuration and data are turned into explicit
  arguments at the edge (``engine/setup.py``, ``data/preprocess.py``).
- ``config/`` imports nothing else of the package.
- No source file over 500 lines, no function over 60 lines.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import textreid

SRC = Path(textreid.__file__).parent
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _statements(node: ast.AST):
    """Every statement under ``node``, nested ones too (expressions are not visited: much faster)."""
    for name in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, name, ()):
            if isinstance(child, ast.stmt | ast.excepthandler):
                yield child
                yield from _statements(child)


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def _package(path: Path) -> str:
    return ".".join(("textreid", *path.relative_to(SRC).parent.parts))


def _runtime_imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` (a module of ``package``), inside
    functions too, except those under ``if TYPE_CHECKING:``."""
    tree = _tree(path)
    typing_only: set[int] = set()
    for node in _statements(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno")}
    found = []
    for node in _statements(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _imports_from(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in _modules(package)
        for line, module in _runtime_imports(path, _package(path))
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]


def test_models_import_nothing_from_data_or_from_the_layers_above() -> None:
    forbidden = ("textreid.data", "textreid.engine", "textreid.search", "textreid.cli", "textreid.api")
    assert _imports_from("models", forbidden) == []


def test_config_imports_nothing_else_of_the_package() -> None:
    found = [f"{path.relative_to(SRC)}:{line} imports {module}" for path in _modules("config")
             for line, module in _runtime_imports(path, _package(path))
             if module.startswith("textreid") and not module.startswith("textreid.config")]
    assert found == []


def test_the_import_check_sees_imports_inside_functions_and_skips_type_checking(tmp_path: Path) -> None:
    # the layering checks above are only worth something if they can fail
    path = tmp_path / "probe.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from textreid.data.records import Record\n"
                    "def f():\n    from ..data import vocab\n    import textreid.engine.setup\n")
    found = [module for _, module in _runtime_imports(path, "textreid.models")]
    assert found == ["typing", "textreid.data", "textreid.engine.setup"]


def test_no_source_file_or_function_is_too_long() -> None:
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        lines, name = len(path.read_text().splitlines()), path.relative_to(SRC)
        if lines > MAX_FILE_LINES:
            too_long.append(f"{name}: {lines} lines (split it by concern)")
        too_long += [f"{name}: {node.name} is {node.end_lineno - node.lineno + 1} lines"
                     for node in _statements(_tree(path)) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                     and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert too_long == []
