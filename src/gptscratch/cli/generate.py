"""`sample` and `chat`: generation from the command line, streamed to stdout as it is produced
(several samples one after another, in order), with `--json` for machine-readable output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptscratch import api

log = logging.getLogger("gptscratch")


def _config(args: argparse.Namespace) -> api.GenerationConfig:
    """The generation settings from the flags (the flags are the config's fields)."""
    from gptscratch import api

    names = {f.name for f in dataclasses.fields(api.GenerationConfig)}
    return api.GenerationConfig(**{k: v for k, v in vars(args).items() if k in names})


def _report_load(loaded: api.LoadedModel, config: api.GenerationConfig) -> None:
    if loaded.checkpoint is not None:
        meta = loaded.checkpoint.meta
        log.info("loaded %s (step %s, val loss %.4f)", loaded.checkpoint.path, meta.get("step"),
                 meta.get("val_loss", math.nan))
    if config.uses_beams and config.temperature != 0.8:
        log.info("beam search is deterministic: --temperature, --top-k, --top-p and --min-p "
                 "are not used")


def _print_in_order(chunks: Iterable[api.Chunk], rows: int, heading: str,
                    after: Callable[[api.Completion], None]) -> None:
    """Stream rows one after another: the current row prints as it is generated, the others
    are buffered until their turn. Each row opens with `heading`; `after` gets each row's
    Completion once it is printed."""
    buffers: dict[int, list[str]] = {}
    finished: dict[int, api.Completion] = {}
    current = 0
    sys.stdout.write(heading)
    for chunk in chunks:
        buffers.setdefault(chunk.row, []).append(chunk.text)
        if chunk.completion is not None:
            finished[chunk.row] = chunk.completion
        while True:
            sys.stdout.write("".join(buffers.pop(current, [])))
            if current not in finished:
                break
            sys.stdout.write("\n")
            sys.stdout.flush()
            after(finished[current])
            current += 1
            if current == rows:
                break
            sys.stdout.write("-" * 40 + "\n" + heading)
        sys.stdout.flush()


def _prompt(args: argparse.Namespace) -> str:
    """--prompt, else what is piped on stdin, else a new line."""
    if args.prompt is not None:
        return str(args.prompt)
    piped = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    return piped or "\n"


def cmd_sample(args: argparse.Namespace) -> None:
    from gptscratch import api

    if args.interactive:
        args.you = args.system = None
        return cmd_chat(args)
    config = _config(args)
    prompt = _prompt(args)
    loaded = api.load(args.ckpt, args.device, args.dtype, args.block_size, args.quantize)
    generation = api.stream_chunks(loaded, prompt, config)  # every check, before any output
    _report_load(loaded, config)
    copy_index = api.corpus_index(args.ckpt) if args.check_copy else None

    def after(done: api.Completion) -> None:
        if copy_index is not None:
            _report_copy(api.check_copy(copy_index, done.text))

    if args.json:
        for chunk in generation:
            if chunk.completion is not None:
                print(json.dumps(dataclasses.asdict(chunk.completion)), flush=True)
                after(chunk.completion)
        return
    _print_in_order(generation, config.num_samples, generation.prompts[0], after)


def _read_line(prompt: str) -> str | None:
    """One line from the user: with a prompt and line editing on a terminal, plainly from a
    pipe. None at the end of input."""
    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        import readline  # noqa: F401  (importing it gives input() line editing and history)

        try:
            return input(prompt)
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def cmd_chat(args: argparse.Namespace) -> None:
    from gptscratch import api

    config = _config(args)
    session = api.chat_session(args.ckpt, config, you=args.you, device=args.device,
                               dtype=args.dtype, block_size=args.block_size,
                               quantize=args.quantize, system=args.system)
    _report_load(session.loaded, config)
    tty = sys.stdin is not None and sys.stdin.isatty()
    if tty:
        print("Type a prompt and press Enter; /reset clears the dialogue, /quit (or Ctrl-D) "
              "ends.", file=sys.stderr)
    while (line := _read_line("> " if tty else "")) is not None:
        if line.strip() in ("/quit", "/exit"):
            break
        if line.strip() == "/reset":
            session.reset()
            continue
        if not line.strip():
            continue
        if args.json:
            print(json.dumps({"prompt": line, "text": "".join(session.reply(line))}),
                  flush=True)
            continue
        if not tty:  # piped: each answer is a block under its prompt, blocks a line apart
            sys.stdout.write(f"> {line}\n")
        sys.stdout.write(session.heading)
        for piece in session.reply(line):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write(session.separator if tty else session.separator.rstrip("\n") + "\n\n")
        sys.stdout.flush()


def _report_copy(report: Any) -> None:
    """The memorisation check of one sample, on stderr so stdout keeps only the text."""
    from gptscratch import api

    sys.stdout.flush()
    print("[check-copy] " + api.describe_copy(report).replace("\n", "\n[check-copy] "),
          file=sys.stderr, flush=True)
