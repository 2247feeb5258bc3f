"""The notebooks run end to end (in their small size) and their .py and .ipynb stay in sync."""

from __future__ import annotations

import os
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


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(notebook: Path, tmp_path: Path, shared_cache: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment: a small run, the session's corpus cache, and
    # matplotlib's inline backend (not the Agg one the test session selects).
    monkeypatch.setenv("GPTSCRATCH_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(shared_cache))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "the notebook should show its plots"
    assert os.listdir(tmp_path)  # it wrote its run (checkpoints, pictures) where it ran
