"""The sub-commands other than generation: each calls `gptscratch.api` and prints the result."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable

from gptscratch.cli.generate import cmd_chat, cmd_sample
from gptscratch.cli.parser import prepare_options
from gptscratch.errors import UserError


def cmd_prepare(args: argparse.Namespace) -> None:
    from gptscratch import api

    options = prepare_options(args)
    if args.chat:
        data = api.prepare_chat(args.data or "shakespeare-questions", args.tokenizer, args.out,
                                force=args.force, chat_template=args.chat_template,
                                **api.chat_prepare_options(options))
    else:
        if args.chat_template != "tokens":
            raise UserError("--chat-template lays out conversations; add --chat, or drop it")
        del options["skip_bad_rows"]
        data = api.prepare(args.data or "shakespeare", args.tokenizer, args.out,
                           force=args.force, **options)
    print(data.dir)  # the result; what it holds is in the log line above


def cmd_train(args: argparse.Namespace) -> None:
    from gptscratch import api

    fields = api.MODEL_FIELDS | api.TRAIN_FIELDS
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    try:
        result = api.train(args.preset, args.data, args.out, tokenizer=args.tokenizer,
                           resume=args.resume, stop_at=args.stop_at, overrides=overrides,
                           prepare_options=prepare_options(args), init_from=args.init_from,
                           sft=args.sft)
    finally:
        api.shutdown()  # leave torchrun's process group, if this is one of its processes
    if args.sample_tokens > 0 and api.is_main_process():
        print(f"--- a sample from {result.out_dir} (val loss {result.best_val_loss:.4f}) ---")
        for piece in api.stream(result.out_dir, "\n", max_new_tokens=args.sample_tokens, seed=0):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print(f"\n--- more: gptscratch sample --ckpt {result.out_dir} --prompt TEXT ---")


def cmd_explain(args: argparse.Namespace) -> None:
    from gptscratch import api

    print(api.format_stages(api.explain(args.ckpt, args.prompt, device=args.device)))


def cmd_viz(args: argparse.Namespace) -> None:
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


def cmd_report(args: argparse.Namespace) -> None:
    from gptscratch import api

    print(f"wrote {api.report(args.runs, args.out)}")


def cmd_eval(args: argparse.Namespace) -> None:
    from gptscratch import api

    if args.task:
        if args.data is not None:
            raise UserError("--data and --task measure different things (a text's loss, a "
                            "task's accuracy); give one of them")
        report = api.evaluate_tasks(args.ckpt, args.task, shots=args.shots, limit=args.limit,
                                    batch_size=args.batch_size, device=args.device,
                                    dtype=args.dtype, quantize=args.quantize,
                                    progress=not args.quiet)
        print(json.dumps(report.to_dict()) if args.json else report.table())
        return
    for flag, value, default in (("--shots", args.shots, 0), ("--limit", args.limit, None)):
        if value != default:
            raise UserError(f"{flag} applies to benchmark tasks; add --task FILE, or leave "
                            f"{flag} out")
    result = api.evaluate(args.ckpt, args.data, batch_size=args.batch_size, device=args.device,
                          dtype=args.dtype, quantize=args.quantize)
    print(json.dumps(result.to_dict()) if args.json else result.describe())


def cmd_import_hf(args: argparse.Namespace) -> None:
    from gptscratch import api

    out = api.import_hf(args.source, args.out)
    print(f"imported {args.source} into {out}; try: gptscratch sample --ckpt {out}")


def cmd_merge_lora(args: argparse.Namespace) -> None:
    from gptscratch import api

    out = api.merge_lora(args.ckpt, args.out)
    print(f"merged the adapters of {args.ckpt} into {out}; try: gptscratch sample --ckpt {out}"
          f" or gptscratch export-hf --ckpt {out} --out DIR")


def cmd_export_hf(args: argparse.Namespace) -> None:
    from gptscratch import api

    out = api.export_hf(args.ckpt, args.out)
    print(f"exported {args.ckpt} to {out}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained('{out}')")


def cmd_serve(args: argparse.Namespace) -> None:
    from gptscratch import api
    from gptscratch.server.config import ServeConfig

    names = {f.name for f in dataclasses.fields(ServeConfig)} - {"host", "port"}
    api.serve(args.ckpt, args.host, args.port, device=args.device, dtype=args.dtype,
              block_size=args.block_size, quantize=args.quantize,
              **{k: getattr(args, k) for k in names})


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "prepare": cmd_prepare, "train": cmd_train, "sample": cmd_sample, "chat": cmd_chat,
    "eval": cmd_eval, "explain": cmd_explain, "viz": cmd_viz, "report": cmd_report,
    "import-hf": cmd_import_hf,
    "export-hf": cmd_export_hf, "merge-lora": cmd_merge_lora, "serve": cmd_serve}
