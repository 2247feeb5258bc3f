"""The notebooks run end to end (in their small size) and their .py and .ipynb stay in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_both_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_gpt_from_scratch.ipynb",
                                           "02_concepts_in_detail.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_py_matches_ipynb(notebook: Path) -> None:
    import jupytext

    paired = jupytext.read(notebook.with_suffix(".py"))
    stored = jupytext.read(notebook)
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in paired.cells
    ], f"run: jupytext --sync {notebook.with_suffix('.py').relative_to(REPO)}"
    # Committed without outputs, so diffs show only the code.
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
