"""Layers only point downward:
data, model -> evaluation -> training -> inference, viz -> api -> cli."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "gptscratch"
# What each part of the package may import from gptscratch (besides itself and `errors`).
ALLOWED = {
    "data": set(),
    "model": set(),
    "evaluation": {"data", "model"},
    "training": {"data", "model", "evaluation"},
    "inference": {"data", "model", "evaluation", "training"},
    "viz": {"data", "model", "evaluation", "training"},
    "api": {"data", "model", "evaluation", "training", "inference", "viz"},
    "cli": {"data", "model", "evaluation", "training", "inference", "viz", "api"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "gptscratch" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_imports_point_downward() -> None:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        part = _part(path)
        if part not in ALLOWED:
            continue
        for target in _imports(path) - {part, "errors"}:
            if target not in ALLOWED[part]:
                bad.append(f"{path.relative_to(PACKAGE)} imports gptscratch.{target}")
    assert not bad, bad


def test_nothing_imports_the_cli() -> None:
    users = [p for p in PACKAGE.rglob("*.py")
             if _part(p) not in ("cli", "__main__") and "cli" in _imports(p)]
    assert not users
