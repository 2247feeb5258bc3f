"""The CLI starts fast: it parses its flags, and answers `--help`, without importing torch or
any other heavy library; each command imports what it needs when it runs.
(`benchmarks/startup.py` measures the times; this guards the cause.)"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "transformers", "datasets", "matplotlib", "tokenizers", "tiktoken",
         "safetensors", "fastapi", "uvicorn")
COMMANDS = ["prepare", "train", "sample", "chat", "eval", "explain", "viz", "report", "serve",
            "import-hf", "export-hf"]


def imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running `code`."""
    report = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    probe = f"{code}\nimport sys, json\n{report}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_importing_the_cli_imports_nothing_heavy() -> None:
    assert imported_after("import gptscratch.cli") == []


def test_every_help_and_the_flag_parsing_need_nothing_heavy() -> None:
    code = "\n".join([
        "import contextlib, io",
        "from gptscratch.cli import main",
        "from gptscratch.cli.parser import build_parser",
        f"for argv in [['--help'], *[[c, '--help'] for c in {COMMANDS!r}]]:",
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):",
        "        main(argv)",
        "build_parser().parse_args(['sample', '--ckpt', 'x', '--temperature', '0.5'])",
    ])
    assert imported_after(code) == []


def test_the_checker_sees_a_heavy_import() -> None:
    assert imported_after("import numpy") == ["numpy"]
