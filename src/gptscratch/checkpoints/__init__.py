"""Trained models on disk, and the one loader that turns any of them into a model to run.

Leaves, which never import each other:
- `checkpoint`: atomic, verified checkpoints (safetensors weights + JSON metadata), the
  format `train` writes;
- `adapters`: what a LoRA checkpoint adds: its adapters, its base's source and hash;
- `huggingface`: Hugging Face GPT-2 folders and hub downloads, mapped to ours, read and
  written.
Above them:
- `load`: `load_model(source) -> LoadedModel` for every source, and `build_model`, the one
  way a GPT is made from weights;
- `convert`: `import-hf`, `export-hf` and `merge-lora`.

This package sits above `data`, `model` and `runtime` and below everything that runs a model.
"""
