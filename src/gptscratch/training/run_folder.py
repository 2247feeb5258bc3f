"""The run folder (`train --out DIR`): `latest/` and `best/` (and their `.old` twins while a save
swaps them), `data/`, `metrics.jsonl` and the marker `.gptscratch.json`; and the rule that
gptscratch touches nothing else there (`check_run_folder`, before anything is written).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gptscratch.checkpoints.checkpoint import META
from gptscratch.data.token_files import is_prepared_dir
from gptscratch.errors import UserError
from gptscratch.files import OWNER_MARKER, claim, foreign_entries, old_version, owned

CHECKPOINTS = ("latest", "best")
METRICS = "metrics.jsonl"
DATA = "data"


@dataclass(frozen=True)
class RunFolder:
    """A checked run folder: where it is and whether it holds a checkpoint to resume."""

    path: Path
    has_checkpoint: bool


def _is_checkpoint(path: Path) -> bool:
    return (path / META).is_file()


def _unmarked_run(folder: Path) -> bool:
    """A run folder of ours without the marker: written before the marker existed (it holds a
    checkpoint of ours), or by a run killed between preparing its data and marking the folder
    (it holds our marked `data/` and nothing but the names of a run)."""
    if any(_is_checkpoint(folder / name) for name in CHECKPOINTS):
        return True
    names = {p.name for p in folder.iterdir()}
    return owned(folder / DATA) and names <= _our_names()


def _our_names() -> set[str]:
    names = {OWNER_MARKER, METRICS, DATA}
    for name in CHECKPOINTS:
        names |= {name, old_version(Path(name)).name}
    return names


def check_run_folder(out: Path, resume: bool) -> RunFolder:
    """Refuse, before anything is written, a run folder that is not ours to write into.

    Raises:
        UserError: `out` is a file, or a non-empty folder that is not a gptscratch run; it
            holds a checkpoint and `resume` is off; it holds none and `resume` is on; or an
            entry we would replace (`best/`, `latest/`, ...) is not one of our checkpoints.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; give a folder for the run")
    foreign = foreign_entries(out, _unmarked_run)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise UserError(f"--out '{out}' is not empty ({shown}) and is not a gptscratch run "
                        "folder; gptscratch writes only into folders it made: choose a new "
                        "or empty --out")
    for name in sorted(_our_names() & {p.name for p in out.iterdir()} if out.is_dir() else []):
        path = out / name
        if name in (OWNER_MARKER, METRICS):
            continue
        ours = (owned(path) or is_prepared_dir(path)) if name == DATA else _is_checkpoint(path)
        if not ours:
            raise UserError(f"'{path}' is not gptscratch's (not a checkpoint or prepared data "
                            "it made), and a run would replace it; move it out of the run "
                            "folder")
    has_checkpoint = any(_is_checkpoint(out / name) or _is_checkpoint(old_version(out / name))
                         for name in CHECKPOINTS)
    if has_checkpoint and not resume:
        raise UserError(f"'{out}' already holds a run; add --resume to continue it or choose "
                        "a new --out")
    if resume and not has_checkpoint:
        raise UserError(f"'{out}' holds no checkpoint to resume; train without --resume to "
                        "start a run there")
    return RunFolder(out, has_checkpoint)


def claim_run_folder(folder: RunFolder) -> None:
    """Mark the folder as ours (creating it), remove the temporary folders of a save that
    was killed half-way, and, for a fresh run, the metrics of one killed before its first
    checkpoint."""
    claim(folder.path, "run")
    for name in CHECKPOINTS:
        for stale in folder.path.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    if not folder.has_checkpoint:
        (folder.path / METRICS).unlink(missing_ok=True)
