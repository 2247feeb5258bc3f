"""Where and in what precision the model runs: the runtime settings every command shares.

- `device`: `--device auto|cpu|cuda|cuda:N|mps` to a device, its free memory, the torch build;
- `cpu`: CPU start-up settings (denormals, the memory allocator) and bf16 support;
- `precision`: the one dtype rule, for training (autocast) and inference (weights);
- `compile`: whether training runs through `torch.compile` on a device.

Training, evaluation and generation sit above this package; it sits above `errors` and `files`.
"""
