"""Every function under src/ fits on a screen: at most 80 lines (docstring included). Modules
have no cap: a module holds one idea, whatever its length."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "gptscratch"
MAX_FUNCTION_LINES = 80


def oversized(package: Path) -> list[str]:
    """Each function of `package` over the limit, with its length."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(package)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.name}: {lines} lines")
    return found


def test_functions_stay_small() -> None:
    assert oversized(PACKAGE) == []


def test_the_size_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text("def long() -> None:\n" + body)
    (tmp_path / "short.py").write_text("def short() -> None:\n    pass\n" + "x = 1\n" * 500)
    assert oversized(tmp_path) == [f"long.py:long: {MAX_FUNCTION_LINES + 1} lines"]
