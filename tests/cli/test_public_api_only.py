"""`fibers demo` and the shell are built from public API: cli imports no private engine or
ledger module and no test harness; finance imports no private engine module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.setdefault(node.module, set()).add(path.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name, set()).add(path.name)
    return found


def _offending(package: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    return {module: files for module, files in _imported_modules(package).items()
            if module.startswith(forbidden)}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("cli", ("fibers._", "ledger._", "fibers.testing", "ledger.testing")),
        ("finance", ("fibers._", "fibers.testing", "ledger.testing")),
    ],
)
def test_package_imports_only_public_names(package: str, forbidden: tuple[str, ...]) -> None:
    assert _offending(package, forbidden) == {}


def test_the_check_sees_a_private_import() -> None:
    modules = _imported_modules("fibers")  # the engine itself imports its private modules
    assert any(module.startswith("fibers._") for module in modules)


def test_the_engine_and_its_rpc_import_nothing_of_the_ledger_or_the_cli() -> None:
    """docs/rpc.md: the generic RPC lives in fibers.rpc; the node's operations in cli."""
    offending = {}
    for path in sorted((ROOT / "fibers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad = [n for n in names if n.split(".")[0] in ("ledger", "finance", "cli")]
            if bad:
                offending[str(path.relative_to(ROOT))] = bad
    assert offending == {}
