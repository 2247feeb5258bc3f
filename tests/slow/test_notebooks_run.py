"""The notebooks run end to end, in their small size (GPTSCRATCH_NOTEBOOK_SMALL=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


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
