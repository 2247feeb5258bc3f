"""Trained models on disk, and the one loader that turns any of them into a model to run.

Leaves that never import each other: `checkpoint` (our format), `adapters` (LoRA) and
`huggingface` (GPT-2 folders, hub downloads). Above them: `load` (`load_model`, `build_model`)
and `convert` (`import-hf`, `export-hf`, `merge-lora`). Sits above `data`, `model`, `runtime`.
"""
