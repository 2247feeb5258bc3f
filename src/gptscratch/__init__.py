"""gptscratch: build, train, understand and run GPT language models from scratch.

The Python API lives in `gptscratch.api` (prepare, train, evaluate, load, stream_chunks,
complete, stream, generate, the plot_* pictures, explain, check_copy, import_hf, export_hf);
the same names are available here, imported on first use so `import gptscratch` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["prepare", "load_prepared", "train", "evaluate", "load", "stream_chunks", "complete",
           "stream", "generate", "chat_session", "GenerationConfig", "plot_curves",
           "plot_attention", "plot_next_token", "plot_embeddings", "plot_logit_lens", "explain",
           "check_copy", "corpus_index", "import_hf", "export_hf"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gptscratch import api

        return getattr(api, name)
    raise AttributeError(f"module 'gptscratch' has no attribute {name!r}")
