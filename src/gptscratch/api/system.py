"""The Python API for the machine itself: which PyTorch build runs gptscratch."""

from __future__ import annotations

from gptscratch.runtime.device import describe_build

__all__ = ["describe_build"]
