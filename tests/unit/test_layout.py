"""House rules the linters do not check: short functions, and no module outside the contracts.

- No function in the operator package (every layer: router, controller, cli, ...) is over 80
  lines (issue 16 began it for four layers).
- Every module of the package is named by the pure-core contract in pyproject.toml, as pure
  (``source_modules``) or as I/O (its ``inferscale.*`` ``forbidden_modules``), itself or through
  a package that contains it. A package that mixes pure and I/O modules names them one by one,
  so a new file there fails here until someone decides which it is, instead of escaping the
  contract. A package ``__init__`` may stay unnamed while it imports only named pure modules.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "operator"
PACKAGE = SOURCE / "inferscale"

MAX_FUNCTION_LINES = 80
SHORT_FUNCTION_PACKAGES = ("inferscale",)

PURE_CONTRACT_PREFIX = "Pure cores"
UNNAMED_MODULES = frozenset({"inferscale", "inferscale.__main__"})
"""The package root (its version only) and ``python -m inferscale`` (the cli's entry point)."""


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function in ``tree``, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            assert node.end_lineno is not None
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def long_functions(root: Path, packages: tuple[str, ...]) -> dict[str, int]:
    """``path:qualname`` -> lines of every function over the limit in ``packages``."""
    found: dict[str, int] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            for name, lines in _functions(ast.parse(path.read_text(), str(path))):
                if lines > MAX_FUNCTION_LINES:
                    found[f"{where}:{name}"] = lines
    return found


def test_no_function_is_over_80_lines() -> None:
    too_long = long_functions(SOURCE, SHORT_FUNCTION_PACKAGES)
    assert not too_long, f"split these into named parts of at most {MAX_FUNCTION_LINES} lines"


def pure_contract(pyproject: Path) -> tuple[list[str], list[str]]:
    """(pure, I/O) module names of the pure-core contract."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    contracts = [c for c in config["contracts"] if c["name"].startswith(PURE_CONTRACT_PREFIX)]
    assert len(contracts) == 1, f"one contract named {PURE_CONTRACT_PREFIX!r}..."
    (contract,) = contracts
    io = [m for m in contract["forbidden_modules"] if m.startswith("inferscale.")]
    return list(contract["source_modules"]), io


def named_by(module: str, names: list[str]) -> bool:
    """Whether ``module`` is one of ``names`` or inside one (``pkg.*``: inside ``pkg``)."""
    for name in names:
        package = name.removesuffix(".*")
        if module == name or module.startswith(f"{package}."):
            return True
    return False


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every module under the source root ``root``."""
    for path in sorted((root / "inferscale").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_only(path: Path, allowed: list[str]) -> bool:
    """Whether every import of the file at ``path`` is ``__future__`` or named in ``allowed``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module is None:
                return False  # relative: the project never uses them; decide by hand
            targets = [node.module]
        else:
            continue
        if not all(t == "__future__" or named_by(t, allowed) for t in targets):
            return False
    return True


def unnamed_modules(root: Path, pyproject: Path) -> list[str]:
    """Modules the pure-core contract names neither as pure nor as I/O."""
    pure, io = pure_contract(pyproject)
    missing = []
    for name, path in modules(root):
        if name in UNNAMED_MODULES or named_by(name, pure) or named_by(name, io):
            continue
        if path.name == "__init__.py" and imports_only(path, pure):
            continue
        missing.append(name)
    return missing


def test_every_module_is_named_pure_or_io_by_the_contract() -> None:
    missing = unnamed_modules(SOURCE, REPO / "pyproject.toml")
    assert not missing, (
        "name these in the pure-core contract of pyproject.toml: in source_modules if they "
        "import no I/O, else in forbidden_modules with the I/O modules"
    )


# -- the checks themselves can fail ----------------------------------------------------------


def test_a_long_function_and_a_long_method_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        f"def short():\n    return 1\n\n\ndef long():\n{body}\n\n\n"
        f"class C:\n    async def long(self):\n{body.replace('    ', '        ')}\n"
    )
    assert long_functions(tmp_path, ("pkg",)) == {
        "pkg/m.py:long": MAX_FUNCTION_LINES + 1,
        "pkg/m.py:C.long": MAX_FUNCTION_LINES + 1,
    }


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        ("from __future__ import annotations\nfrom inferscale.mixed.pure import X\n", ["new"]),
        ("import socket\n", ["new", "package"]),
        ("from .pure import X\n", ["new", "package"]),
    ],
)
def test_a_new_module_in_a_mixed_package_is_unnamed(
    tmp_path: Path, init: str, expected: list[str]
) -> None:
    package = tmp_path / "inferscale" / "mixed"
    package.mkdir(parents=True)
    (tmp_path / "inferscale" / "__init__.py").write_text("")
    (package / "__init__.py").write_text(init)
    for name in ("pure", "io", "new"):
        (package / f"{name}.py").write_text("")
    (tmp_path / "inferscale" / "whole").mkdir()
    (tmp_path / "inferscale" / "whole" / "any.py").write_text("")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[[tool.importlinter.contracts]]\n"
        f'name = "{PURE_CONTRACT_PREFIX} of the test"\n'
        'source_modules = ["inferscale.mixed.pure", "inferscale.whole", "inferscale.gone.*"]\n'
        'forbidden_modules = ["socket", "inferscale.mixed.io"]\n'
    )
    names = {"new": "inferscale.mixed.new", "package": "inferscale.mixed"}
    assert sorted(unnamed_modules(tmp_path, pyproject)) == sorted(names[e] for e in expected)
