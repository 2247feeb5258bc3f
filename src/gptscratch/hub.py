"""Reaching the Hugging Face Hub, or knowing at once that it cannot be reached.

Hub datasets (`data.sources`) and hub models (`checkpoints.hf_folders`) are optional and need
the internet. Without it, the Hugging Face libraries retry with back-off for about 23 s
before failing; `go_offline_if_unreachable` spends at most a second finding out and then puts
them in offline mode, where they fail at once with a message we can turn into one line.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_offline() -> bool:
    """Whether the user or we put the Hugging Face libraries in offline mode."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in _FLAGS)


def go_offline_if_unreachable(timeout: float = 1.0) -> None:
    """Switch the Hugging Face libraries to offline mode when the Hub cannot be reached.

    The flags are read when `huggingface_hub` and `datasets` are imported, so they are set in
    the environment and, if those are already imported, in their config modules too.
    """
    if hub_offline():
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    address = (endpoint.hostname or "huggingface.co",
               endpoint.port or (80 if endpoint.scheme == "http" else 443))
    try:
        socket.create_connection(address, timeout=timeout).close()
        return
    except OSError as exc:
        logger.debug("Hugging Face Hub unreachable (%s); using offline mode", exc)
    for flag in _FLAGS:
        os.environ[flag] = "1"
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        module = sys.modules.get(module_name)
        for flag in _FLAGS:
            if module is not None and hasattr(module, flag):
                setattr(module, flag, True)
