"""The README's quickstart holds a set-up, a main job and the test command CI runs."""

from __future__ import annotations

from conftest import REPO, quickstart_commands


def test_quickstart_has_setup_main_job_and_test_commands() -> None:
    setup, main_job, test = quickstart_commands()
    assert "pip install -c constraints.txt" in setup
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text()
    assert main_job.startswith("gptscratch train --preset shakespeare-char --data shakespeare")
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -q -c constraints.txt -e \".[hf,dev,track,serve,eval]\"" in ci
    assert ci.strip().splitlines()[-1] == test  # CI runs exactly the README's test command


def test_the_file_map_names_every_module_benchmark_and_doc() -> None:
    """A module is named by its path, or by its file name in its folder's row."""
    readme = (REPO / "README.md").read_text()
    rows = readme.split("## File map", 1)[1].split("\n## ", 1)[0].splitlines()
    paths = [*(REPO / "src").rglob("*.py"), *(REPO / "benchmarks").glob("*.py"),
             *(REPO / "docs").glob("*.md"), *(REPO / "tests").glob("*.py")]
    missing = []
    for path in paths:
        relative = path.relative_to(REPO).as_posix()
        if path.name in ("__init__.py", "__main__.py", "conftest.py"):
            continue
        folder_row = next((r for r in rows if f"`{relative.rsplit('/', 1)[0]}/`" in r), "")
        if f"`{relative}`" not in readme and f"`{path.name}`" not in folder_row:
            missing.append(relative)
    assert missing == []
