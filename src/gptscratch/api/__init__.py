"""The Python API: the typed functions behind every CLI command.

    from gptscratch import api
    data = api.prepare("shakespeare", tokenizer="char", out_dir="data/shakespeare-char")
    result = api.train(preset="shakespeare-char", data="shakespeare", out_dir="out/run")
    print(api.generate("out/run", prompt="ROMEO:", max_new_tokens=200, seed=1))
    print(api.evaluate("out/run").perplexity)
    api.import_hf("gpt2", "models/gpt2")                       # online: OpenAI's GPT-2 124M
    api.train(init_from="models/gpt2", data="my_text.txt", out_dir="out/mine")  # fine-tune
    api.export_hf("out/mine", "hf/mine")                       # for transformers

This is the top of the layer stack (beside the CLI): `training.py` composes data, checkpoints,
runtime and training; `generation.py` text generation; `understanding.py` the pictures, explain,
the copy check and the run report; `system.py` the torch build; `serving.py` the
OpenAI-compatible HTTP server (`gptscratch.server`). It never prints. Each name is
imported from its module on first use, so a command pays only for what it runs (`sample` never
loads the distributed-training code).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptscratch.api.generation import (
        Chunk,
        Completion,
        Generation,
        GenerationConfig,
        LoadedModel,
        chat_session,
        complete,
        generate,
        load,
        stream,
        stream_chunks,
    )
    from gptscratch.api.serving import serve, server_app
    from gptscratch.api.system import describe_build
    from gptscratch.api.training import (
        MODEL_FIELDS,
        TRAIN_FIELDS,
        evaluate,
        export_hf,
        import_hf,
        is_main_process,
        load_prepared,
        merge_lora,
        prepare,
        shutdown,
        train,
    )
    from gptscratch.api.understanding import (
        check_copy,
        corpus_index,
        describe_copy,
        explain,
        format_stages,
        plot_attention,
        plot_curves,
        plot_embeddings,
        plot_logit_lens,
        plot_next_token,
        report,
    )

_MODULES = {
    "generation": ["load", "stream_chunks", "complete", "stream", "generate", "chat_session",
                   "GenerationConfig", "LoadedModel", "Chunk", "Completion", "Generation"],
    "training": ["prepare", "load_prepared", "train", "evaluate", "import_hf", "export_hf",
                 "merge_lora", "MODEL_FIELDS", "TRAIN_FIELDS", "is_main_process", "shutdown"],
    "system": ["describe_build"],
    "serving": ["serve", "server_app"],
    "understanding": ["plot_curves", "plot_attention", "plot_next_token", "plot_embeddings",
                      "plot_logit_lens", "explain", "format_stages", "check_copy",
                      "corpus_index", "describe_copy", "report"],
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = ["load", "stream_chunks", "complete", "stream", "generate", "chat_session",
           "GenerationConfig", "LoadedModel", "Chunk", "Completion", "Generation", "prepare",
           "load_prepared", "train", "evaluate", "import_hf", "export_hf", "merge_lora",
           "MODEL_FIELDS",
           "TRAIN_FIELDS", "is_main_process", "shutdown", "describe_build", "plot_curves",
           "plot_attention", "plot_next_token", "plot_embeddings", "plot_logit_lens", "explain",
           "format_stages", "check_copy", "corpus_index", "describe_copy", "report", "serve",
           "server_app"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'gptscratch.api' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gptscratch.api.{_HOME[name]}"), name)
