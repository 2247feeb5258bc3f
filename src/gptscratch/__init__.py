"""gptscratch: build, train, understand and run GPT language models from scratch.

The Python API lives in `gptscratch.api`; its names are available here too, imported on first
use, so `import gptscratch` stays cheap.
"""

from __future__ import annotations

from typing import Any

from gptscratch.api import __all__

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gptscratch import api

        return getattr(api, name)
    raise AttributeError(f"module 'gptscratch' has no attribute {name!r}")
