"""`gptscratch serve`: its flags and its command, which calls `api.serve`.

Kept apart from `parser.py` and `commands.py` so the server's few flags live with the one
function that reads them; nothing here imports the server's libraries (fastapi, uvicorn),
which load only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from gptscratch.cli.flag_help import CONTEXT_HELP


def add_serve_parser(sub: Any, quiet: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[quiet],
                       help="serve a checkpoint over an OpenAI-compatible HTTP API")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint directory")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="the most sequences decoded together (default: 64, or as many as "
                        "a quarter of the free memory holds)")
    p.add_argument("--max-tokens-per-request", type=int, default=512, metavar="N",
                   help="the largest max_tokens a request may ask for (default 512)")
    p.add_argument("--max-prompt-tokens", type=int, default=8192, metavar="N",
                   help="the longest prompt accepted, in tokens (default 8192)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="sequences that may wait for a place in the batch; more get HTTP "
                        "429 (default 64)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every /v1 request")
    p.add_argument("--name", default=None,
                   help="the model's name in the API (default: its run folder's name)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="auto",
                   help="weights: auto (bf16 where faster) | float32 | bfloat16 | float16")
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help=CONTEXT_HELP)


def cmd_serve(args: argparse.Namespace) -> None:
    from gptscratch import api

    api.serve(args.ckpt, args.host, args.port, name=args.name, max_batch=args.max_batch,
              max_tokens_per_request=args.max_tokens_per_request,
              max_prompt_tokens=args.max_prompt_tokens, max_queue=args.max_queue,
              api_key=args.api_key, device=args.device, dtype=args.dtype,
              block_size=args.block_size)
