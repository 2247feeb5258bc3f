"""Where and in what precision the model runs, for every command: the device (`device`), CPU
settings (`cpu`), the one dtype rule (`precision`) and whether to use `torch.compile`
(`compile`). It sits above `errors` and `files`, below training, evaluation and generation.
"""
