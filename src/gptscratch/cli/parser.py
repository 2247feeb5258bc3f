"""The `gptscratch` argument parser: every sub-command, its flags and their help text.

Every declared setting's flag and help are made from its declaration (`gptscratch.settings`),
so a new setting needs no code here; building the parser imports only the config modules.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence, Set
from typing import Any, NoReturn, get_origin

from gptscratch.errors import did_you_mean
from gptscratch.settings import kinds

CONTEXT_HELP = ("tokens read at once (default: the trained context); longer than trained only "
                "for a model with rotary positions (--positions rope)")


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors (like every other error of gptscratch) that point at
    the command's own `--help`, and a "did you mean ...?" for a misspelt command, picture
    name or flag. Abbreviated flags are refused (`--temp` is not `--temperature`), so a flag
    added later never changes what an existing command line means."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            hint = did_you_mean(str(value), map(str, action.choices))
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{hint}; choose from {choices}")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: Any = None) -> argparse.Namespace:
        """Parse, and report flags that no parser took to the command they were given to,
        with the closest flag that command has."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen_parser(self, parsed)
            unknown = next((a.split("=", 1)[0] for a in extras if a.startswith("-")), "")
            command.error(f"unrecognized arguments: {' '.join(extras)}"
                          f"{_flag_hint(unknown, list(command._option_string_actions))}")
        return parsed


def _flag_hint(unknown: str, flags: list[str]) -> str:
    """What to say of an unknown flag: the flags it abbreviates (abbreviations are refused),
    else the closest flag, else nothing."""
    if not unknown.startswith("--"):
        return ""
    longer = sorted(f for f in flags if f.startswith(unknown))
    if longer:
        return f" (flags are not abbreviated: did you mean {' or '.join(longer)}?)"
    return did_you_mean(unknown, flags)


def _chosen_parser(parser: argparse.ArgumentParser,
                   parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost sub-command parser the parsed arguments chose (`gptscratch viz attention`'s
    for `viz attention`), or `parser` itself where no sub-command was chosen."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(parsed, action.dest, None)
            if chosen in action.choices:
                return _chosen_parser(action.choices[chosen], parsed)
    return parser


def flag_of(name: str, cls: Any = None) -> str:
    """The flag of setting `name` (of config class `cls`, where its declaration names one)."""
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
    rule = fields[name].metadata.get("rule") if name in fields else None
    return (rule.flag if rule is not None and rule.flag else None) or "--" + name.replace("_", "-")


def add_setting_flags(p: argparse.ArgumentParser, cls: Any, skip: Set[str] = frozenset(),
                      from_preset: bool = False) -> None:
    """A flag for every field of config class `cls` but those in `skip`, with its declared
    help: a bool becomes `--x` / `--no-x`, a tuple a repeatable flag. With `from_preset`
    every default is None (the preset's value stands unless the flag is given)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, rule = kinds(cls)[f.name], f.metadata.get("rule")
        flag = flag_of(f.name, cls)
        help_text = rule.help if rule is not None else f.name.replace("_", " ")
        extra: dict[str, Any] = {"dest": f.name, "help": help_text}
        if from_preset:
            extra["help"] += " (preset default)"
        if kind is bool:
            if from_preset:
                p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, **extra)
            else:
                p.add_argument(flag, action="store_false" if f.default else "store_true", **extra)
            continue
        extra["metavar"] = (rule.metavar if rule is not None and rule.metavar
                            else flag[2:].upper() if get_origin(kind) is tuple
                            else f.name.upper())
        if get_origin(kind) is tuple:  # repeatable; the config splits "a,b" where it may
            p.add_argument(flag, action="append", default=None if from_preset else [], **extra)
        else:
            p.add_argument(flag, type=kind, default=None if from_preset else f.default, **extra)


def _model_flags(p: argparse.ArgumentParser, dtype_help: str | None = None,
                 dtype: str = "auto", context: bool = True) -> None:
    """Where and how to run a checkpoint: what every command that loads one takes (the
    weights' dtype, their quantization and the context where `dtype_help` / `context` say)."""
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    if dtype_help is not None:
        p.add_argument("--dtype", default=dtype, help=dtype_help)
        p.add_argument("--quantize", default="none", metavar="none|int8",
                       help="int8: store the Linear weights in int8 on a CPU, a quarter of "
                            "fp32's bytes to read a token: faster decoding for a little "
                            "accuracy (default none)")
    if context:
        p.add_argument("--block-size", type=int, default=None, metavar="N", help=CONTEXT_HELP)


def _add_prepare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the documents (of a single text: of its end) held out for "
                        "validation (default 0.1)")
    p.add_argument("--lowercase", action="store_true", help="lowercase the text first")
    p.add_argument("--text-column", "--hf-text-column", dest="text_column", default="text",
                   help="the field of .jsonl lines, the column of .parquet files and datasets "
                        "holding the text (default text)")
    p.add_argument("--hf-dataset", default=None, metavar="NAME",
                   help="a Hugging Face dataset name or builder (e.g. 'text' with data files)")
    p.add_argument("--hf-split", default="train", help="dataset split (default train)")
    p.add_argument("--hf-data-files", nargs="+", default=None, metavar="FILE",
                   help="local data files for a dataset builder such as 'text' or 'json'")
    p.add_argument("--hf-streaming", action="store_true",
                   help="stream a hub dataset instead of downloading it whole")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tokenizer processes (default: all cores)")
    p.add_argument("--bpe-sample", type=float, default=200.0, metavar="MB", dest="bpe_sample_mb",
                   help="megabytes of text a bpe:N tokenizer learns from (default 200)")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip files that are not UTF-8 (with a warning) instead of stopping")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="conversations: skip malformed ones (counted in the log) instead of "
                        "stopping at the first")


def _generation_flags(skip: set[str]) -> argparse.ArgumentParser:
    """The flags `sample` and `chat` share: the checkpoint, where to run it, and every
    generation setting but those in `skip`."""
    from gptscratch.generation.config import GenerationConfig

    p = argparse.ArgumentParser(add_help=False)
    add_setting_flags(p, GenerationConfig, skip)
    _model_flags(p, "weights for generation: auto (bf16 where faster) | float32 | bfloat16 | "
                    "float16")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The whole `gptscratch` parser: one sub-parser per command."""
    parser = _Parser(prog="gptscratch",
                     description="Build, train and run GPT language models from scratch.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    # -q also works after the command name (`gptscratch sample -q ...`).
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare_parser(sub, quiet)
    _add_train_parser(sub, quiet)
    _add_generation_parsers(sub, quiet)
    _add_model_parsers(sub, quiet)
    _add_viz_parser(sub, quiet)
    _add_hf_parsers(sub, quiet)
    _add_serve_parser(sub, quiet)
    return parser


def _add_prepare_parser(sub: Any, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("prepare", parents=[quiet],
                       help="tokenize a corpus into token shards for training")
    p.add_argument("--data", default=None,
                   help="'shakespeare' (built in; with --chat, 'shakespeare-questions'), a text "
                        "file, a directory or a glob")
    p.add_argument("--tokenizer", default="char", help="char | gpt2 | bpe:N (default char)")
    p.add_argument("--out", default=None, help="output directory (default: in the cache)")
    p.add_argument("--force", action="store_true",
                   help="prepare again even if --out holds the same data")
    p.add_argument("--chat", action="store_true",
                   help="conversations for train --sft: JSON/JSONL files in the OpenAI "
                        "(messages), Alpaca or ShareGPT format, or shakespeare-questions")
    from gptscratch.training.config import FinetuneConfig

    # --chat-template, declared with train's conversation settings.
    add_setting_flags(p, FinetuneConfig, {f.name for f in dataclasses.fields(FinetuneConfig)}
                      - {"chat_template"})
    _add_prepare_flags(p)


def _add_train_parser(sub: Any, quiet: argparse.ArgumentParser) -> None:
    from gptscratch.model.config import ModelConfig
    from gptscratch.training.config import SECTIONS
    from gptscratch.training.presets import PRESETS

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
    p.add_argument("--sft", action="store_true",
                   help="chat fine-tuning: --data holds conversations (default: the built-in "
                        "shakespeare-questions), the tokenizer gains turn markers, and the loss "
                        "is taken on the answers; use with --init-from")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after STEP as if interrupted (continue with --resume)")
    p.add_argument("--sample-tokens", type=int, default=300, metavar="N",
                   help="print an N-token sample from the trained model at the end (0: none)")
    _add_prepare_flags(p)
    add_setting_flags(p, ModelConfig, {"vocab_size"}, from_preset=True)
    for section in SECTIONS.values():
        add_setting_flags(p, section, from_preset=True)


def _add_generation_parsers(sub: Any, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sample", parents=[quiet, _generation_flags(set())],
                       help="generate text from a checkpoint")
    p.add_argument("--prompt", default=None, help="text to continue (default: stdin if piped)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per sample: text, token ids, log-probabilities")
    p.add_argument("--interactive", action="store_true", help="a prompt loop (same as chat)")
    p.add_argument("--check-copy", action="store_true",
                   help="after each sample, report on stderr its longest span found verbatim "
                        "in the training text and its word 4-gram overlap with it")
    p = sub.add_parser("chat", parents=[quiet, _generation_flags({"num_samples"})],
                       help="a prompt loop: type a prompt, see its continuation stream")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per prompt: the prompt and the answer's text")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="a model fine-tuned with train --sft: the system message that opens "
                        "the conversation")
    p.add_argument("--you", default=None, metavar="NAME",
                   help="with --speaker: you speak as NAME and the model answers as --speaker, "
                        "keeping the whole dialogue as context")


def _add_model_parsers(sub: Any, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("eval", parents=[quiet],
                       help="loss, perplexity and bits per byte of a checkpoint, or its "
                            "accuracy on benchmark tasks (--task)")
    _model_flags(p, "float32 | bfloat16 | float16", dtype="float32", context=False)
    p.add_argument("--data", default=None, help="a text file (default: the run's val split)")
    p.add_argument("--task", action="append", default=None, metavar="FILE",
                   help="score a benchmark task instead of the loss (repeat for several): a "
                        "file (CORE multiple choice / schema / language modelling JSONL, "
                        "HellaSwag, ARC, PIQA, Winogrande, LAMBADA, MMLU CSV or Parquet) or "
                        "a built-in task made from the plays: shakespeare (all three), "
                        "shakespeare:next-line, shakespeare:speaker, shakespeare:last-word; "
                        "shakespeare:questions (the chat demo's held-out questions, a task "
                        "per kind)")
    p.add_argument("--shots", type=int, default=0,
                   help="with --task: solved examples before each question (a fixed seed "
                        "picks them from the task's other items)")
    p.add_argument("--limit", type=int, default=None,
                   help="with --task: score only each task's first N items")
    p.add_argument("--batch-size", type=int, default=16,
                   help="windows (or, with --task, choices) per forward pass")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("explain", parents=[quiet],
                       help="walk a prompt through the model, printing every stage's shapes")
    _model_flags(p, context=False)
    p.add_argument("--prompt", required=True, help="the text to run through the model")


def _add_serve_parser(sub: Any, quiet: argparse.ArgumentParser) -> None:
    from gptscratch.server.config import ServeConfig

    p = sub.add_parser("serve", parents=[quiet],
                       help="serve a checkpoint over an OpenAI-compatible HTTP API")
    _model_flags(p, "weights: auto (bf16 where faster) | float32 | bfloat16 | float16")
    add_setting_flags(p, ServeConfig)


def _add_hf_parsers(sub: Any, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("import-hf", parents=[quiet],
                       help="convert a Hugging Face GPT-2 into a gptscratch checkpoint")
    p.add_argument("source", help="a folder with config.json and model.safetensors (or "
                                  "pytorch_model.bin), or a hub name such as gpt2 (online)")
    p.add_argument("--out", required=True, help="checkpoint folder to create")
    p = sub.add_parser("export-hf", parents=[quiet],
                       help="write a checkpoint as a Hugging Face GPT-2 folder for transformers")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="folder to create")
    p = sub.add_parser("merge-lora", parents=[quiet],
                       help="fold a LoRA run's adapters into its base: a plain checkpoint")
    p.add_argument("--ckpt", required=True, help="a LoRA run directory or checkpoint directory")
    p.add_argument("--out", required=True, help="checkpoint folder to create")


def _add_viz_parser(sub: Any, quiet: argparse.ArgumentParser) -> None:
    viz = sub.add_parser("viz", parents=[quiet], help="draw pictures of a model or of training "
                         "runs as PNG files").add_subparsers(dest="picture", required=True,
                                                             metavar="PICTURE")

    def picture(name: str, help_text: str, prompt: bool) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = viz.add_parser(name, parents=[quiet], help=help_text)
        p.add_argument("--out", default=f"{name}.png", help=f"PNG file (default {name}.png)")
        if name != "curves":
            _model_flags(p, context=False)
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
    from gptscratch.model.config import SamplingConfig

    # The picture shows what temperature, top-k and top-p cut: their flags, as `sample` has them.
    add_setting_flags(p, SamplingConfig, {f.name for f in dataclasses.fields(SamplingConfig)}
                      - {"temperature", "top_k", "top_p"})
    p.add_argument("--top", type=int, default=20, help="candidates to draw (default 20)")
    p = picture("embeddings", "token embeddings in 2D (PCA) and position similarity", False)
    p.add_argument("--tokens", type=int, default=120,
                   help="tokens to label, the most frequent in the training data (default 120)")
    picture("logit-lens", "what each layer would predict at each position of a prompt", True)
    p = sub.add_parser("report", parents=[quiet], help="runs side by side in one HTML file")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run directories")
    p.add_argument("--out", default="report.html", help="HTML file (default report.html)")


def prepare_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `prepare` options shared by `prepare` and `train` (`--force` is prepare's own)."""
    return dict(val_fraction=args.val_fraction, lowercase=args.lowercase,
                text_column=args.text_column, hf_dataset=args.hf_dataset,
                hf_split=args.hf_split, hf_data_files=args.hf_data_files,
                hf_streaming=args.hf_streaming, workers=args.workers,
                bpe_sample_mb=args.bpe_sample_mb, skip_bad_files=args.skip_bad_files,
                skip_bad_rows=args.skip_bad_rows)
