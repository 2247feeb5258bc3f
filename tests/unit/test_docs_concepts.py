"""The concept guides cover the topics the project promises, and every link to code points at
a file that exists and, where the link names a function or class, at its definition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

CONCEPTS = REPO / "docs" / "concepts"
LINK = re.compile(r"\[`?([^\]`]+)`?\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_topic_has_a_guide() -> None:
    names = {p.stem for p in CONCEPTS.glob("*.md")}
    assert {"attention", "multi-head-attention", "layer-norm", "gelu",
            "residuals-and-positions", "training-loop", "sampling"} <= names


@pytest.mark.parametrize("guide", sorted(CONCEPTS.glob("*.md")), ids=lambda p: p.name)
def test_links_point_at_real_code(guide: Path) -> None:
    text = guide.read_text(encoding="utf-8")
    links = LINK.findall(text)
    code_links = [(name, target) for name, target in links if target.endswith(".py")]
    if guide.name != "README.md":
        assert code_links, f"{guide.name} links to no code"
    for name, target in links:
        path = (guide.parent / target).resolve()
        assert path.exists(), f"{guide.name}: {target} does not exist"
        if target.endswith(".py") and re.fullmatch(r"\w+", name):
            source = path.read_text(encoding="utf-8")
            assert re.search(rf"^\s*(def|class) {name}\b", source, re.M), (
                f"{guide.name}: {name} is not defined in {target}")
