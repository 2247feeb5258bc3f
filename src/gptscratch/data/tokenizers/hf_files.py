"""Our tokenizers as Hugging Face files, and back, for `checkpoints/huggingface.py`; only the
core `tokenizers` package is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptscratch.data.tokenizers.base import EOT, Tokenizer
from gptscratch.data.tokenizers.char import CharTokenizer
from gptscratch.data.tokenizers.chat_template import (
    MARKERS,
    TEXT_TEMPLATE,
    chat_template_of,
    with_chat_template,
)
from gptscratch.data.tokenizers.gpt2 import GPT2_VOCAB_SIZE, GPT2Tokenizer, gpt2_files
from gptscratch.data.tokenizers.trained_bpe import BPETokenizer
from gptscratch.errors import UserError
from gptscratch.files import atomic_file

HF_TOKENIZER, HF_TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"


def hf_tokenizer_json(tok: Tokenizer) -> str:
    """The `tokenizer.json` text of a Hugging Face tokenizer that gives `tok`'s ids: `gpt2`
    from the same local GPT-2 files, `bpe:N` its own JSON (an exact round trip), `char` a
    WordLevel vocabulary of single characters; a `tokens` chat template's markers as added
    special tokens with their ids (a `text` one adds none: its markers are text)."""
    from tokenizers import Tokenizer as HFTokenizer

    template = chat_template_of(tok)
    if template is None or template.first_id is None:
        return _base_tokenizer_json(tok)
    hf = HFTokenizer.from_str(_base_tokenizer_json(tok))
    hf.add_special_tokens(list(template.markers))
    ids = [hf.token_to_id(m) for m in template.markers]
    if ids != list(range(template.first_id, template.first_id + len(ids))):
        raise UserError(f"the chat markers would get ids {ids} in the exported tokenizer, not "
                        f"{template.first_id} and on; this tokenizer cannot be exported")
    return str(hf.to_str())


def _base_tokenizer_json(tok: Tokenizer) -> str:
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if tok.kind == "bpe":
        text: str = tok.to_dict()["tokenizer_json"]
        return text
    if tok.kind == "gpt2":
        from tokenizers import ByteLevelBPETokenizer

        encoder, merges = gpt2_files()
        bpe = ByteLevelBPETokenizer.from_file(str(encoder), str(merges))
        bpe.add_special_tokens([EOT])  # already id 50256 in the vocabulary; marks it special
        return str(bpe.to_str())
    if tok.kind == "char":
        chars: list[str] = tok.to_dict()["chars"]
        # No unknown token: a character outside the vocabulary is an encoding error, as it is
        # for our char tokenizer (any id we picked for it would be a real character's).
        hf = HFTokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)},
                                          unk_token=None))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()  # join the characters back with nothing between them
        if tok.eot_id is not None:
            hf.add_special_tokens([EOT])  # the next id, len(chars), as in ours
        return str(hf.to_str())
    raise UserError(f"cannot export a {tok.kind!r} tokenizer; expected char, gpt2 or bpe")


def save_hf_tokenizer(tok: Tokenizer, dest: Path, model_max_length: int) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` for `tok` into the existing folder
    `dest`, for `AutoTokenizer.from_pretrained`; it truncates to `model_max_length`."""
    eot = EOT if tok.eot_id is not None else None
    template = chat_template_of(tok)
    # A `text` template's end of a turn is several tokens: no token can say it (generate's
    # `stop_strings` can).
    end = template.end if template is not None and template.end_id is not None else eot
    config: dict[str, Any] = {
        # PreTrainedTokenizerFast loads tokenizer.json as it is, in transformers 4 and 5.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot, "eos_token": end,
        "unk_token": None, "pad_token": None, "model_max_length": model_max_length,
        # transformers' default clean-up would turn " ," into "," when decoding.
        "clean_up_tokenization_spaces": False,
    }
    if template is not None:  # `apply_chat_template` renders as `ChatTemplate.render` does
        config["chat_template"] = template.jinja()
    for name, text in ((HF_TOKENIZER, hf_tokenizer_json(tok)),
                       (HF_TOKENIZER_CONFIG, json.dumps(config, indent=2) + "\n")):
        with atomic_file(dest / name) as tmp:
            tmp.write_text(text, encoding="utf-8")


def tokenizer_from_hf_dir(folder: Path) -> Tokenizer | None:
    """Our tokenizer for a Hugging Face model folder, or None without tokenizer files: GPT-2's
    vocabulary and merges (in `tokenizer.json`, or `vocab.json` + `merges.txt`) give `gpt2`, a
    one-character WordLevel vocabulary `char`, other BPEs `bpe`; else a UserError. The chat
    markers as added tokens give the `tokens` chat template, our `text` template's Jinja
    (`export-hf`'s) the `text` one."""
    base = _base_from_hf_dir(folder)
    if base is None or not (folder / HF_TOKENIZER).is_file():
        return base
    added = json.loads((folder / HF_TOKENIZER).read_text(encoding="utf-8")).get("added_tokens")
    ids = {a.get("content"): a.get("id") for a in added or [] if isinstance(a, dict)}
    if all(m in ids for m in MARKERS):
        if [ids[m] for m in MARKERS] != list(range(base.vocab_size, base.vocab_size + 4)):
            raise UserError(f"'{folder / HF_TOKENIZER}' has the chat markers at ids "
                            f"{[ids[m] for m in MARKERS]}, not {base.vocab_size} and on; "
                            "gptscratch cannot run this layout")
        return with_chat_template(base)
    if _saved_jinja(folder) == TEXT_TEMPLATE.jinja():
        return with_chat_template(base, "text")
    return base


def _saved_jinja(folder: Path) -> str | None:
    """The folder's Jinja chat template: `chat_template.jinja` (where newer transformers save
    it), else `tokenizer_config.json`'s `chat_template`; None if neither has one."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    try:
        found = json.loads((folder / HF_TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = found.get("chat_template") if isinstance(found, dict) else None
    return value if isinstance(value, str) else None


def _base_from_hf_dir(folder: Path) -> Tokenizer | None:
    path = folder / HF_TOKENIZER
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
            model = json.loads(text)["model"]
            kind = model["type"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot read '{path}' ({type(e).__name__}: {e}); it is not a "
                            "Hugging Face tokenizer.json") from None
        if kind == "BPE":
            if _is_gpt2(model["vocab"], model.get("merges", [])):
                return GPT2Tokenizer()
            try:
                return BPETokenizer.from_json(text)
            except Exception as e:  # tokenizers raises a bare Exception on a bad file
                raise UserError(f"cannot load '{path}' ({e}); the tokenizer file is "
                                "damaged") from None
        if kind == "WordLevel":
            chars = sorted(model["vocab"], key=model["vocab"].__getitem__)
            if all(len(c) == 1 for c in chars) and chars == sorted(chars) and [
                    model["vocab"][c] for c in chars] == list(range(len(chars))):
                added = json.loads(text).get("added_tokens") or []
                eot = any(isinstance(a, dict) and a.get("content") == EOT
                          and a.get("id") == len(chars) for a in added)
                return CharTokenizer(chars, eot=eot)
        raise UserError(f"'{path}' holds a {kind} tokenizer, which gptscratch cannot run; "
                        "it runs byte-level BPE (GPT-2's or trained) and char vocabularies")
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if vocab.is_file() and merges.is_file():
        try:
            encoder = json.loads(vocab.read_text(encoding="utf-8"))
            merge_lines = merges.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read '{vocab}' or '{merges}' ({e})") from None
        if _is_gpt2(encoder, [m for m in merge_lines if m and not m.startswith("#version")]):
            return GPT2Tokenizer()
        raise UserError(f"'{vocab}' is not GPT-2's vocabulary and '{folder}' has no "
                        f"{HF_TOKENIZER}; save the tokenizer with transformers' save_pretrained")
    return None


def _is_gpt2(vocab: dict[str, int], merges: list[Any]) -> bool:
    """Whether a BPE vocabulary and merge list are exactly GPT-2's."""
    if len(vocab) != GPT2_VOCAB_SIZE:
        return False
    encoder, bpe = gpt2_files()
    if vocab != json.loads(encoder.read_text(encoding="utf-8")):
        return False
    theirs = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return theirs == bpe.read_text(encoding="utf-8").splitlines()[1:len(theirs) + 1] and (
        len(theirs) == GPT2_VOCAB_SIZE - 257)
