"""The Python API: the typed functions behind every CLI command.

    from gptscratch import api
    data = api.prepare("shakespeare", tokenizer="char", out_dir="data/shakespeare-char")
    result = api.train(preset="shakespeare-char", data="shakespeare", out_dir="out/run")
    print(api.generate("out/run", prompt="ROMEO:", max_new_tokens=200, seed=1))
    print(api.evaluate("out/run").perplexity)
    print(api.evaluate_tasks("out/run", ["shakespeare"]).table())  # benchmark tasks
    api.import_hf("gpt2", "models/gpt2")                       # online: OpenAI's GPT-2 124M
    api.train(init_from="models/gpt2", data="my_text.txt", out_dir="out/mine")  # fine-tune
    api.train(init_from="out/run", sft=True, out_dir="out/chat")  # teach it to answer
    api.export_hf("out/mine", "hf/mine")                       # for transformers

The top of the layer stack, beside the CLI; it never prints. `_HOME` lists every public name
once, with the module it lives in, where it is imported on first use: a command pays only for
what it runs (`sample` never loads the distributed-training code).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    # Generation (`api/generation.py`: a path or a loaded model in, text out).
    "load": "api.generation", "stream_chunks": "api.generation", "complete": "api.generation",
    "stream": "api.generation", "generate": "api.generation", "chat_session": "api.generation",
    "GenerationConfig": "generation.config", "LoadedModel": "checkpoints.load",
    "Chunk": "generation.stream", "Completion": "generation.stream",
    "Generation": "generation.stream",
    # Data, training and checkpoints.
    "prepare": "data.prepare", "prepare_chat": "data.prepare_chat",
    "chat_prepare_options": "data.prepare_chat",
    "Message": "data.conversations",
    "load_prepared": "data.token_files", "train": "training.run",
    "MODEL_FIELDS": "training.run", "TRAIN_FIELDS": "training.run",
    "is_main_process": "training.distributed", "shutdown": "training.distributed",
    "evaluate": "evaluation.evaluate", "evaluate_tasks": "evaluation.tasks",
    "merge_lora": "checkpoints.convert",
    "import_hf": "checkpoints.convert", "export_hf": "checkpoints.convert",
    "describe_build": "runtime.device",
    # Serving (`gptscratch.server`, an OpenAI-compatible HTTP API).
    "serve": "api.serving", "server_app": "api.serving",
    # Understanding: pictures, a walk through the forward pass, the copy check, the report.
    "plot_curves": "viz.curves", "plot_attention": "api.understanding",
    "plot_next_token": "api.understanding", "plot_embeddings": "api.understanding",
    "plot_logit_lens": "api.understanding", "explain": "api.understanding",
    "format_stages": "evaluation.explain", "check_copy": "api.understanding",
    "corpus_index": "api.understanding", "describe_copy": "evaluation.memorisation",
    "report": "api.understanding",
}
__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'gptscratch.api' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gptscratch.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return __all__
