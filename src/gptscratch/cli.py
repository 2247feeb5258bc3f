"""The `gptscratch` command: parses arguments, calls `gptscratch.api`, reports errors.

User mistakes (`UserError`) become one line on stderr, `error: ...`, and exit code 2.
This is the only module that configures logging or writes to the terminal directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints

from gptscratch.errors import UserError

# Fields of the config dataclasses that become `train` flags, with their help text.
MODEL_HELP = {
    "block_size": "context length in tokens", "n_layer": "Transformer blocks",
    "n_head": "attention heads per block", "n_embd": "embedding width (divisible by n_head)",
    "dropout": "dropout probability", "bias": "biases in Linear and LayerNorm layers",
    "attention": "auto | sdpa | explicit",
    "tie_embeddings": "share the token embedding with the LM head",
}
TRAIN_HELP = {
    "freeze_embeddings": "fine-tuning: keep the embeddings (and a tied LM head) fixed",
    "freeze_layers": "fine-tuning: keep the first K Transformer blocks fixed",
    "fsdp": "under torchrun: shard weights, gradients and optimizer state across processes",
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


def _generation_flags() -> argparse.ArgumentParser:
    """The flags `sample` and `chat` share."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--max-new-tokens", type=int, default=500,
                   help="tokens to generate per sample (default 500)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None,
                   help="sample only among the K most likely tokens (default: all)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample only among the most likely tokens covering P of the "
                        "probability (default 1.0: all)")
    p.add_argument("--min-p", type=float, default=0.0,
                   help="drop tokens less than MIN_P times as likely as the best (default 0)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages tokens already in the text (default 1.0: none)")
    p.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="in [-2, 2]: penalise tokens by how often they were generated")
    p.add_argument("--presence-penalty", type=float, default=0.0,
                   help="in [-2, 2]: penalise tokens once generated")
    p.add_argument("--beams", type=int, default=1,
                   help="beam search with N beams (deterministic; default 1: sampling)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search: > 0 favours longer texts (default 1.0)")
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="beam search: go on until no running beam can win")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end a sample at this text, which is not printed (repeatable)")
    p.add_argument("--speaker", default=None, metavar="NAME",
                   help="script mode: generate NAME's next speech (plays, screenplays)")
    p.add_argument("--until-next-speaker", action="store_true",
                   help="script mode: stop where another speaker's line begins")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="re-run the whole context for every token (slow; for comparison)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="auto",
                   help="weights for generation: auto (bf16 where faster) | float32 | bfloat16 | "
                        "float16")
    return p


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
    p.add_argument("--init-from", default=None, metavar="SOURCE",
                   help="fine-tune: start from a gptscratch run or checkpoint, a Hugging Face "
                        "GPT-2 folder, or a hub name such as gpt2 (online); the model shape and "
                        "tokenizer come from it, the preset is not used, and the learning rate "
                        "defaults to 1e-4 (default out: out/finetune)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after STEP as if interrupted (continue with --resume)")
    p.add_argument("--sample-tokens", type=int, default=300, metavar="N",
                   help="print an N-token sample from the trained model at the end (0: none)")
    _add_prepare_flags(p)
    _add_config_flags(p, ModelConfig, {"vocab_size"}, MODEL_HELP)
    _add_config_flags(p, TrainConfig, set(), TRAIN_HELP)

    p = sub.add_parser("sample", parents=[quiet, _generation_flags()],
                       help="generate text from a checkpoint")
    p.add_argument("--prompt", default=None, help="text to continue (default: stdin if piped)")
    p.add_argument("--num-samples", type=int, default=1,
                   help="samples to generate, in one batch (default 1)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per sample: text, token ids, log-probabilities")
    p.add_argument("--interactive", action="store_true", help="a prompt loop (same as chat)")
    p.add_argument("--check-copy", action="store_true",
                   help="after each sample, report on stderr its longest span found verbatim "
                        "in the training text and its word 4-gram overlap with it")

    p = sub.add_parser("chat", parents=[quiet, _generation_flags()],
                       help="a prompt loop: type a prompt, see its continuation stream")
    p.add_argument("--you", default=None, metavar="NAME",
                   help="with --speaker: you speak as NAME and the model answers as --speaker, "
                        "keeping the whole dialogue as context")

    p = sub.add_parser("eval", parents=[quiet],
                       help="loss, perplexity and bits per byte of a checkpoint")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--data", default=None, help="a text file (default: the run's val split)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("explain", parents=[quiet],
                       help="walk a prompt through the model, printing every stage's shapes")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--prompt", required=True, help="the text to run through the model")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    _add_viz_parser(sub, quiet)

    p = sub.add_parser("import-hf", parents=[quiet],
                       help="convert a Hugging Face GPT-2 into a gptscratch checkpoint")
    p.add_argument("source", help="a folder with config.json and model.safetensors (or "
                                  "pytorch_model.bin), or a hub name such as gpt2 (online)")
    p.add_argument("--out", required=True, help="checkpoint folder to create")

    p = sub.add_parser("export-hf", parents=[quiet],
                       help="write a checkpoint as a Hugging Face GPT-2 folder for transformers")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="folder to create")
    return parser


def _add_viz_parser(sub: Any, quiet: argparse.ArgumentParser) -> None:
    viz = sub.add_parser("viz", parents=[quiet], help="draw pictures of a model or of training "
                         "runs as PNG files").add_subparsers(dest="picture", required=True,
                                                             metavar="PICTURE")

    def picture(name: str, help_text: str, prompt: bool) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = viz.add_parser(name, parents=[quiet], help=help_text)
        p.add_argument("--out", default=f"{name}.png", help=f"PNG file (default {name}.png)")
        if name != "curves":
            p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
            p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
        if prompt:
            p.add_argument("--prompt", required=True, help="the text to look at")
        return p

    p = picture("curves", "train/val loss, learning rate and tokens/s of one or more runs", False)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="run directories (or metrics.jsonl files) to compare")
    p = picture("attention", "attention heatmaps of every layer and head for a prompt", True)
    p.add_argument("--layer", type=int, action="append", default=None, metavar="N",
                   help="draw only layer N (0-based; repeatable; default all)")
    p = picture("next-token", "next-token candidates and what the sampling settings cut", True)
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None, help="keep the K most likely tokens")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="keep the most likely tokens covering P of the probability")
    p.add_argument("--top", type=int, default=20, help="candidates to draw (default 20)")
    p = picture("embeddings", "token embeddings in 2D (PCA) and position similarity", False)
    p.add_argument("--tokens", type=int, default=120,
                   help="tokens to label, the most frequent in the training data (default 120)")
    picture("logit-lens", "what each layer would predict at each position of a prompt", True)


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
                           prepare_options=_prepare_options(args), init_from=args.init_from)
    finally:
        shutdown()  # leave torchrun's process group, if this is one of its processes
    if args.sample_tokens > 0 and is_main_process():
        print(f"--- a sample from {result.out_dir} (val loss {result.best_val_loss:.4f}) ---")
        for piece in api.stream(result.out_dir, "\n", max_new_tokens=args.sample_tokens, seed=0):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print(f"\n--- more: gptscratch sample --ckpt {result.out_dir} --prompt TEXT ---")


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


def _cmd_sample(args: argparse.Namespace) -> None:
    from gptscratch import api

    if args.interactive:
        args.you = None
        return _cmd_chat(args)
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


def _cmd_chat(args: argparse.Namespace) -> None:
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


def _cmd_explain(args: argparse.Namespace) -> None:
    from gptscratch import api
    from gptscratch.evaluation.explain import format_stages

    print(format_stages(api.explain(args.ckpt, args.prompt, device=args.device)))


def _cmd_viz(args: argparse.Namespace) -> None:
    from gptscratch import api

    if args.picture == "curves":
        path = api.plot_curves(args.runs, args.out)
    elif args.picture == "attention":
        path = api.plot_attention(args.ckpt, args.prompt, args.out, layers=args.layer,
                                  device=args.device)
    elif args.picture == "next-token":
        path = api.plot_next_token(args.ckpt, args.prompt, args.out,
                                   temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, top=args.top, device=args.device)
    elif args.picture == "embeddings":
        path = api.plot_embeddings(args.ckpt, args.out, tokens=args.tokens, device=args.device)
    else:
        path = api.plot_logit_lens(args.ckpt, args.prompt, args.out, device=args.device)
    print(f"wrote {path}")


def _report_copy(report: Any) -> None:
    """The memorisation check of one sample, on stderr so stdout keeps only the text."""
    from gptscratch.evaluation.memorisation import describe_copy

    sys.stdout.flush()
    print("[check-copy] " + describe_copy(report).replace("\n", "\n[check-copy] "),
          file=sys.stderr, flush=True)


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


def _cmd_import_hf(args: argparse.Namespace) -> None:
    from gptscratch import api

    out = api.import_hf(args.source, args.out)
    print(f"imported {args.source} into {out}; try: gptscratch sample --ckpt {out}")


def _cmd_export_hf(args: argparse.Namespace) -> None:
    from gptscratch import api

    out = api.export_hf(args.ckpt, args.out)
    print(f"exported {args.ckpt} to {out}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained('{out}')")


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
            "chat": _cmd_chat, "eval": _cmd_eval, "explain": _cmd_explain, "viz": _cmd_viz,
            "import-hf": _cmd_import_hf, "export-hf": _cmd_export_hf}


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
