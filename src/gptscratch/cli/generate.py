"""`sample` and `chat`: generation from the command line, streamed to stdout as it is produced
(several samples print one after another, in order), with `--json` for machine-readable output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from gptscratch.errors import UserError


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
             "frequency_penalty", "presence_penalty", "beams", "length_penalty",
             "early_stopping", "stop", "speaker", "until_next_speaker", "use_cache")
    return {n: getattr(args, n) for n in names}


def _load_for_generation(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """Check the options, load the checkpoint, and find its speakers if script mode needs them."""
    from gptscratch import api
    from gptscratch.model.beam_search import BeamConfig
    from gptscratch.model.sampling import SamplingConfig

    options = _generation_options(args)
    # Validate before the (slow) load.
    SamplingConfig(args.temperature, args.top_k, args.top_p, args.min_p,
                   args.repetition_penalty, args.frequency_penalty, args.presence_penalty)
    BeamConfig(args.beams, args.length_penalty)
    if any(s == "" for s in args.stop):
        raise UserError("a stop string is empty; give a non-empty --stop text")
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens ({args.max_new_tokens}) must be >= 0")
    model, tokenizer, ckpt = api.load(args.ckpt, args.device, args.dtype)
    logging.getLogger("gptscratch").info("loaded %s (step %s, val loss %.4f)", ckpt.path,
                                         ckpt.meta.get("step"),
                                         ckpt.meta.get("val_loss", math.nan))
    if args.speaker is not None or args.until_next_speaker:
        options["script"] = api.script_format(ckpt)
    if args.beams > 1 and args.temperature != 0.8:
        logging.getLogger("gptscratch").info("beam search is deterministic: --temperature, "
                                             "--top-k, --top-p and --min-p are not used")
    return model, tokenizer, options


def _print_in_order(chunks: Iterator[Any], rows: int, heading: str,
                    after: Callable[[Any], None]) -> None:
    """Stream rows one after another: the current row prints as it is generated, the others
    are buffered until their turn. `after` gets each row's Completion once it is printed."""
    buffers: dict[int, list[str]] = {}
    finished: dict[int, Any] = {}
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


def cmd_sample(args: argparse.Namespace) -> None:
    from gptscratch import api

    if args.interactive:
        args.you = None
        return cmd_chat(args)
    if args.num_samples < 1:
        raise UserError(f"--num-samples ({args.num_samples}) must be >= 1")
    prompt = args.prompt
    if prompt is None:
        piped = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        prompt = piped or "\n"  # no prompt: start a new line
    if prompt == "":
        raise UserError("the prompt is empty; give --prompt TEXT or pipe text on stdin")
    model, tokenizer, options = _load_for_generation(args)
    chunks = api.stream_chunks(model, tokenizer, prompt, num_samples=args.num_samples,
                               seed=args.seed, **options)
    copy_index = api.corpus_index(args.ckpt) if args.check_copy else None

    def after(done: Any) -> None:
        if copy_index is not None:
            _report_copy(api.check_copy(copy_index, done.text))

    if args.json:
        for chunk in chunks:
            if chunk.completion is not None:
                print(json.dumps(dataclasses.asdict(chunk.completion)), flush=True)
                after(chunk.completion)
        return
    shown = prompt
    if args.speaker is not None:
        from gptscratch.model.script import speaker_prompt

        script = options.get("script")
        name = script.resolve(args.speaker) if script is not None else args.speaker
        shown = speaker_prompt(prompt, name or args.speaker,
                               script.style if script is not None else "line")
    rows = args.num_samples if args.beams == 1 else min(args.num_samples, args.beams)
    _print_in_order(chunks, rows, shown, after)


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
    from gptscratch.model.script import add_speech, speaker_prompt

    if args.you is not None and args.speaker is None:
        raise UserError("--you needs --speaker: the character the model plays")
    dialogue = args.speaker is not None and args.you is not None
    if dialogue:
        args.until_next_speaker = True  # so the corpus's speakers are loaded for the stop rule
    model, tokenizer, options = _load_for_generation(args)
    script = options.get("script")
    style = script.style if script is not None else "line"
    speaker = (script.resolve(args.speaker) if script is not None and args.speaker else None) \
        or args.speaker
    tty = sys.stdin is not None and sys.stdin.isatty()
    if tty:
        print("Type a prompt and press Enter; /reset clears the dialogue, /quit (or Ctrl-D) "
              "ends.", file=sys.stderr)
    transcript = ""
    turn = 0
    while (line := _read_line("> " if tty else "")) is not None:
        if line.strip() in ("/quit", "/exit"):
            break
        if line.strip() == "/reset":
            transcript = ""
            continue
        if not line.strip():
            continue
        prompt = add_speech(transcript, args.you, line, style) if dialogue else line
        seed = None if args.seed is None else args.seed + turn
        turn += 1
        if dialogue or speaker is not None:
            sys.stdout.write(speaker_prompt("", speaker, style))
        reply = []
        for chunk in api.stream_chunks(model, tokenizer, prompt, seed=seed, **options):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            reply.append(chunk.text)
        sys.stdout.write("\n\n" if dialogue else "\n")
        sys.stdout.flush()
        if dialogue:
            transcript = speaker_prompt(prompt, speaker, style) + "".join(reply).strip() + "\n"


def _report_copy(report: Any) -> None:
    """The memorisation check of one sample, on stderr so stdout keeps only the text."""
    from gptscratch.evaluation.memorisation import describe_copy

    sys.stdout.flush()
    print("[check-copy] " + describe_copy(report).replace("\n", "\n[check-copy] "),
          file=sys.stderr, flush=True)
