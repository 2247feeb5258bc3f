"""Trained models on disk: our checkpoint format, and Hugging Face GPT-2 folders.

- `checkpoint`: atomic, verified checkpoints (safetensors weights + JSON metadata), the
  format `train` writes and every other command reads;
- `hf_weights`: Hugging Face GPT-2 configs and parameter names to ours and back (pure maps);
- `huggingface`: `import-hf` / `export-hf`, reading local folders and hub downloads;
- `pretrained` and `init_from`: the weights a fine-tuning run starts from.

This package sits above `data` and `model` (it saves both a model and its tokenizer) and
below evaluation, generation and training.
"""
