"""The `gptscratch` command: parses arguments, calls `gptscratch.api`, reports errors.

User mistakes (`UserError`) become one line on stderr, `error: ...`, and exit code 2.
This is the only module that configures logging or writes to the terminal directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints

from gptscratch.errors import UserError

# Fields of the config dataclasses that become `train` flags, with their help text.
MODEL_HELP = {
    "block_size": "context length in tokens", "n_layer": "Transformer blocks",
    "n_head": "attention heads per block", "n_embd": "embedding width (divisible by n_head)",
    "dropout": "dropout probability", "bias": "biases in Linear and LayerNorm layers",
    "attention": "auto | sdpa | explicit",
}


def _field_type(annotation: Any) -> Any:
    """`int | None` -> int, `float` -> float, `bool` -> bool."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _add_config_flags(p: argparse.ArgumentParser, cls: Any, skip: set[str],
                      helps: dict[str, str]) -> None:
    hints = get_type_hints(cls)  # resolves the string annotations of `from __future__`
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(hints[f.name])
        help_text = f"{helps.get(f.name, f.name.replace('_', ' '))} (preset default)"
        if kind is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text)
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                           help=help_text)


def _add_prepare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the text held out for validation (default 0.1)")
    p.add_argument("--lowercase", action="store_true", help="lowercase the text first")
    p.add_argument("--hf-dataset", default=None, metavar="NAME",
                   help="a Hugging Face dataset name or builder (e.g. 'text' with data files)")
    p.add_argument("--hf-split", default="train", help="dataset split (default train)")
    p.add_argument("--hf-text-column", default="text", help="column holding the text")
    p.add_argument("--hf-data-files", nargs="+", default=None, metavar="FILE",
                   help="local data files for a dataset builder such as 'text' or 'json'")


def _prepare_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(val_fraction=args.val_fraction, lowercase=args.lowercase,
                hf_dataset=args.hf_dataset, hf_split=args.hf_split,
                hf_text_column=args.hf_text_column, hf_data_files=args.hf_data_files)


def build_parser() -> argparse.ArgumentParser:
    from gptscratch.model.config import ModelConfig
    from gptscratch.training.config import TrainConfig
    from gptscratch.training.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="gptscratch",
        description="Build, train and run GPT language models from scratch.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    # -q also works after the command name (`gptscratch sample -q ...`).
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", parents=[quiet],
                       help="tokenize a corpus into train.bin / val.bin")
    p.add_argument("--data", default="shakespeare",
                   help="'shakespeare' (built in), a text file, a directory or a glob")
    p.add_argument("--tokenizer", default="char", help="char | gpt2 | bpe:N (default char)")
    p.add_argument("--out", default=None, help="output directory (default: in the cache)")
    _add_prepare_flags(p)

    p = sub.add_parser("train", parents=[quiet], help="train a GPT (prepares raw text first)")
    p.add_argument("--preset", default="shakespeare-char",
                   help=f"one of {', '.join(PRESETS)} (default shakespeare-char)")
    p.add_argument("--data", default=None,
                   help="'shakespeare', a text file, a directory or glob, or a prepared directory")
    p.add_argument("--out", default=None, help="run directory (default out/<preset>)")
    p.add_argument("--tokenizer", default=None, help="char | gpt2 | bpe:N (default: preset's)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after STEP as if interrupted (continue with --resume)")
    p.add_argument("--sample-tokens", type=int, default=300, metavar="N",
                   help="print an N-token sample from the trained model at the end (0: none)")
    _add_prepare_flags(p)
    _add_config_flags(p, ModelConfig, {"vocab_size"}, MODEL_HELP)
    _add_config_flags(p, TrainConfig, set(), {})

    p = sub.add_parser("sample", parents=[quiet], help="generate text from a checkpoint")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--prompt", default=None, help="text to continue (default: stdin if piped)")
    p.add_argument("--max-new-tokens", type=int, default=500,
                   help="tokens to generate per sample (default 500)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None,
                   help="sample only among the K most likely tokens (default: all)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample only among the most likely tokens covering P of the "
                        "probability (default 1.0: all)")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples to print")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end a sample at this text (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")

    p = sub.add_parser("eval", parents=[quiet],
                       help="loss, perplexity and bits per byte of a checkpoint")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--data", default=None, help="a text file (default: the run's val split)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _cmd_prepare(args: argparse.Namespace) -> None:
    from gptscratch.data.prepare import prepare

    data = prepare(args.data, args.tokenizer, args.out, **_prepare_options(args))
    m = data.meta
    print(f"prepared {data.dir}: {m['train_tokens']:,} train and {m['val_tokens']:,} val tokens, "
          f"vocabulary {m['vocab_size']:,} ({m['tokenizer']})")


def _cmd_train(args: argparse.Namespace) -> None:
    from gptscratch import api
    from gptscratch.training.distributed import is_main_process, shutdown

    fields = api.MODEL_FIELDS | api.TRAIN_FIELDS
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    try:
        result = api.train(args.preset, args.data, args.out, tokenizer=args.tokenizer,
                           resume=args.resume, stop_at=args.stop_at, overrides=overrides,
                           prepare_options=_prepare_options(args))
    finally:
        shutdown()  # leave torchrun's process group, if this is one of its processes
    if args.sample_tokens > 0 and is_main_process():
        print(f"--- a sample from {result.out_dir} (val loss {result.best_val_loss:.4f}) ---")
        for piece in api.stream(result.out_dir, "\n", max_new_tokens=args.sample_tokens, seed=0):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print(f"\n--- more: gptscratch sample --ckpt {result.out_dir} --prompt TEXT ---")


def _cmd_sample(args: argparse.Namespace) -> None:
    from gptscratch import api
    from gptscratch.model.sampling import SamplingConfig

    SamplingConfig(args.temperature, args.top_k, args.top_p)  # validate before loading
    if args.num_samples < 1:
        raise UserError(f"--num-samples ({args.num_samples}) must be >= 1")
    prompt = args.prompt
    if prompt is None:
        piped = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        prompt = piped or "\n"  # no prompt: start a new line
    if prompt == "":
        raise UserError("the prompt is empty; give --prompt TEXT or pipe text on stdin")
    model, tokenizer, ckpt = api.load(args.ckpt, args.device)
    tokenizer.encode(prompt)  # a prompt the tokenizer cannot encode fails before any output
    logging.getLogger("gptscratch").info("sampling from %s (step %s, val loss %.4f)", ckpt.path,
                                         ckpt.meta.get("step"), ckpt.meta.get("val_loss"))
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        pieces = api.stream((model, tokenizer), prompt, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            stop=args.stop, seed=seed)
        sys.stdout.write(prompt)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if i + 1 < args.num_samples:
            sys.stdout.write("-" * 40 + "\n")
        sys.stdout.flush()


def _cmd_eval(args: argparse.Namespace) -> None:
    from gptscratch import api

    result = api.evaluate(args.ckpt, args.data, batch_size=args.batch_size, device=args.device,
                          dtype=args.dtype)
    if args.json:
        print(json.dumps(result.to_dict()))
        return
    bpb = f" | bits/byte {result.bits_per_byte:.4f}" if result.bits_per_byte else ""
    print(f"loss {result.loss:.4f} | perplexity {result.perplexity:.3f}{bpb} | "
          f"{result.tokens:,} tokens")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each record, so it keeps working when
    stderr is swapped (pytest's capture, notebooks) after logging was configured."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(quiet: bool) -> None:
    """gptscratch's progress and info lines go to stderr as plain lines (stdout carries only
    results: generated text, evaluation figures). Under torchrun only rank 0 reports progress;
    the other ranks show warnings and errors, tagged with their rank."""
    handler = _StderrHandler()
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    other_rank = rank != "0"
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s" if other_rank
                                           else "%(message)s"))
    logger = logging.getLogger("gptscratch")
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING if quiet or other_rank else logging.INFO)
    logger.propagate = False


COMMANDS = {"prepare": _cmd_prepare, "train": _cmd_train, "sample": _cmd_sample,
            "eval": _cmd_eval}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gptscratch` console script and `python -m gptscratch`."""
    # Before any torch work: denormal floats made CPU matmuls up to 80x slower here, and worker
    # threads only inherit the flush-to-zero mode if it is set before they start.
    import torch

    torch.set_flush_denormal(True)
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
