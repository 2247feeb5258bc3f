"""Reaching the Hugging Face Hub, or knowing at once that it cannot be reached.

Hub datasets (`data.sources`) and models (`checkpoints.hf_folders`) need the internet; without
it the Hugging Face libraries retry for about 23 s before failing. Offline mode makes them fail
at once, with a message we can turn into one line.
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
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in _FLAGS)


def go_offline_if_unreachable(timeout: float = 1.0) -> None:
    """Put the Hugging Face libraries in offline mode if the Hub does not answer in `timeout`
    seconds: in the environment and, as they read it at import, in their imported config."""
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
