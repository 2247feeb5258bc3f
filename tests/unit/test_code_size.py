"""Every function under src/ fits on a screen and every module holds one idea: at most 80
lines per function (docstring included) and 300 per module."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "gptscratch"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 300


def oversized(package: Path) -> list[str]:
    """Each function and module of `package` over its limit, with its length."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(package)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.name}: {lines} lines")
    return found


def test_functions_and_modules_stay_small() -> None:
    assert oversized(PACKAGE) == []


def test_the_size_check_finds_a_long_function_and_module(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text("def long() -> None:\n" + body)
    (tmp_path / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized(tmp_path) == [f"big.py: {MAX_MODULE_LINES + 1} lines",
                                   f"long.py:long: {MAX_FUNCTION_LINES + 1} lines"]
