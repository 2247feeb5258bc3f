"""`train --init-from SOURCE`: find the trained weights a fine-tuning run starts from.

The source is a gptscratch checkpoint (a run or checkpoint folder) or a Hugging Face GPT-2
(a local folder or a hub name, read by `huggingface.py`). The trainer's fine-tuning defaults
and the rules on what may change live in `training/finetune.py`.
"""

from __future__ import annotations

from pathlib import Path

from gptscratch.checkpoints.adapters import is_lora_checkpoint, merged_model
from gptscratch.checkpoints.checkpoint import META, load_checkpoint
from gptscratch.checkpoints.huggingface import read_hf_model
from gptscratch.checkpoints.pretrained import Pretrained


def load_pretrained(source: str | Path) -> Pretrained:
    """Read the weights, config and tokenizer of a gptscratch checkpoint or HF GPT-2.

    A folder with a config.json is read as Hugging Face's; any other existing folder as a
    gptscratch run or checkpoint; a name that is not a path as a Hugging Face hub name.
    """
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        ckpt = load_checkpoint(path)
        if is_lora_checkpoint(ckpt.meta):  # start from base + adapters, folded together
            config, model = merged_model(ckpt)
        else:
            config, model = ckpt.model_config, ckpt.build_model("cpu")
        return Pretrained(config, dict(model.state_dict()), ckpt.tokenizer(),
                          f"gptscratch checkpoint {ckpt.path}")
    if path.is_file() and path.name == META:
        return load_pretrained(path.parent)
    return read_hf_model(str(source))
