"""Help text of the `train` flags that the parser generates from the config dataclasses
(`cli/parser.py`): one line per `ModelConfig` or `TrainConfig` field; a field not named here
gets its name as help. And the `--block-size` of the commands that generate (sample, chat,
serve), which sets the context of a trained model instead."""

CONTEXT_HELP = ("tokens read at once (default: the trained context); longer than trained only "
                "for a model with rotary positions (--positions rope)")

# Fields of the config dataclasses that become `train` flags, with their help text.
MODEL_HELP = {
    "block_size": "context length in tokens", "n_layer": "Transformer blocks",
    "n_head": "attention heads per block", "n_embd": "embedding width (divisible by n_head)",
    "dropout": "dropout probability", "bias": "biases in Linear and LayerNorm layers",
    "attention": "auto | sdpa | explicit",
    "tie_embeddings": "share the token embedding with the LM head",
    "activation": "gelu_tanh (GPT-2's) | gelu (exact; a faster kernel on CPU) | relu2 "
                  "(relu(x)^2, Primer) | swiglu (gated MLP, ~8C/3 wide)",
    "positions": "learned (GPT-2's position table) | rope (rotary q and k, RoFormer)",
    "norm": "layernorm (GPT-2's) | rmsnorm (no mean, no bias)",
    "qk_norm": "RMSNorm each head's queries and keys before attention",
    "zero_init_proj": "start the attention and MLP output projections at zero",
    "logit_softcap": "bound the logits: X * tanh(logits / X), as Gemma 2 (0: off)",
}


TRAIN_HELP = {
    "freeze_embeddings": "fine-tuning: keep the embeddings (and a tied LM head) fixed",
    "freeze_layers": "fine-tuning: keep the first K Transformer blocks fixed",
    "fsdp": "under torchrun: shard weights, gradients and optimizer state across processes",
    "activation_checkpointing": "recompute each block's activations in the backward pass: "
                                "less memory, ~1/3 more compute",
    "lora_rank": "fine-tuning with --init-from: train rank-R LoRA adapters on a frozen model "
                 "(0: off)",
    "lora_alpha": "LoRA: the adapters' change is scaled by alpha / rank",
    "lora_dropout": "LoRA: dropout on the adapters' input",
    "lora_targets": "LoRA: the layers to adapt, comma-separated: attn, mlp, head",
    "loggers": "also log to tensorboard, csv or wandb (repeatable, or comma-separated)",
    "eval_sample_tokens": "tokens sampled at each evaluation for loggers and report (0: none)",
    "optimizer": "adamw | muon (Muon for the blocks' weight matrices, AdamW for the rest)",
    "muon_lr": "Muon's peak learning rate, scaled by the same schedule as --learning-rate",
    "muon_momentum": "Muon's Nesterov momentum",
}
