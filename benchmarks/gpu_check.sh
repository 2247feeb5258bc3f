#!/usr/bin/env bash
# The GPU check: what only a CUDA GPU can tell (the CUDA tests, the trainer on the GPU, 124M
# training tokens/s and MFU against Hugging Face, loss curves of both recipes, generation
# speed) on one CUDA GPU, each step under a reserved time, 535 s in all (`python
# benchmarks/gpu_check.py --plan` lists them, no GPU needed). Prints one table and writes
# benchmarks/results/gpu_check.json; the work is in benchmarks/gpu_check.py, whose docstring
# says what each part measures. Arguments go on to it (e.g. --out other.json). Exit status:
# 0 when every part passed, 1 when one failed (the JSON says which), 2 when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
# One interpreter start for both questions: does torch import, and does it see a CUDA GPU?
if ! torch_info=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>/dev/null); then
  echo "gpu_check.sh: $PYTHON cannot import torch; activate the environment the README's set-up made (. .venv/bin/activate) or set PYTHON=/path/to/python" >&2
  exit 2
fi
if [[ "$torch_info" != *" True" ]]; then
  echo "gpu_check.sh: no CUDA GPU visible to PyTorch (torch ${torch_info%% *}: torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU and PyPI's CUDA build of torch, or check the logic on CPU with: python benchmarks/gpu_check.py --cpu-smoke" >&2
  exit 2
fi
GPU_CHECK_COMMAND="benchmarks/gpu_check.sh${*:+ $*}" exec "$PYTHON" benchmarks/gpu_check.py "$@"
