"""Whether to train through `torch.compile`: on where fused kernels repay the compile time.
The trainer asks once, at set-up; `--compile` / `--no-compile` (`SystemConfig.compile`) override it.
"""

from __future__ import annotations

import torch

# A run shorter than this cannot repay a cold compile of about a minute on a GPU (a 124M step
# takes 0.1-0.3 s there): a smoke test or a short fine-tune runs eagerly.
COMPILE_MIN_STEPS = 300
COMPILE_MIN_SECONDS = 600.0


def choose_compile(requested: bool | None, device: torch.device, max_steps: int | None = None,
                   max_time: float | None = None) -> tuple[bool, str]:
    """Whether to train through `torch.compile`, and why (for the log); `requested` forces it.

    On CUDA: on (fusing element-wise ops into their neighbours is the known large win) unless
    the run is capped below the thresholds above (reasoned, not measured: no GPU was at hand).
    Off elsewhere: on the 2-core CPU a cold compile of the shakespeare-char preset (33 s)
    repays itself only after ~5.3 minutes of 9 % faster steps, longer than its 4.5-minute
    run, and at the GPT-2 124M shape compiled steps were slower at any run length
    (docs/benchmarks.md); MPS support is partial.
    """
    if requested is not None:
        return requested, "requested"
    if device.type == "cuda":
        if max_steps is not None and max_steps < COMPILE_MIN_STEPS:
            return False, (f"a {max_steps}-step run on CUDA does not repay a cold compile; "
                           "--compile to force")
        if max_time and max_time < COMPILE_MIN_SECONDS:
            return False, (f"a {max_time:g} s run on CUDA does not repay a cold compile; "
                           "--compile to force")
        return True, "default on CUDA: fused kernels pay back the compile time"
    return False, (f"default on {device.type}: a cold compile did not pay back here; "
                   "--compile to force")
