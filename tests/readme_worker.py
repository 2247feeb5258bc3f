"""Runs `gptscratch` command lines one after another in this one process, for
test_readme_examples.py: the README's ~30 examples each paid torch's import (about 3 s on a
2-core CI machine) when each was its own process.

Protocol: each line on stdin is a JSON list, one command's argv (the words after
`gptscratch`, as bash split them); the reply is one line on stdout, `MARK` then a JSON object
with the exit code `rc` and the command's `stdout` and `stderr`. A command's own output is
captured, so only replies reach this process's stdout; `MARK` finds them even if something
wrote to the file descriptor directly. The entry point is the console script's own `main`;
what a separate process adds (the script shim, exit codes through the shell) is run by
test_readme_quickstart.py and integration/test_cli_errors.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback

MARK = "@@readme-worker@@ "
STDIN = "Good morrow.\n"  # what the test pipes to every command (chat reads one line)


def run(argv: list[str]) -> dict[str, object]:
    from gptscratch.cli import main

    out, err = io.StringIO(), io.StringIO()
    real_stdin = sys.stdin
    sys.stdin = io.StringIO(STDIN)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse's errors and --help
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # a crash: the traceback is the test's message
                traceback.print_exc()
                rc = 1
    finally:
        sys.stdin = real_stdin
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve() -> None:
    protocol = sys.stdout
    for line in sys.stdin:
        if line.strip():
            protocol.write(MARK + json.dumps(run(json.loads(line))) + "\n")
            protocol.flush()


if __name__ == "__main__":
    serve()
