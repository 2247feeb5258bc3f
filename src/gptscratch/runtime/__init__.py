"""Where and in what precision the model runs, for every command: the device and whether to
train through `torch.compile` (`device`), CPU settings (`cpu`), the one dtype rule (`precision`).
"""
