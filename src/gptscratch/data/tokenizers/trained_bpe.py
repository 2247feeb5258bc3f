"""The `bpe:N` tokenizer: a byte-level BPE (GPT-2's scheme and regex, `<|endoftext|>` at id 0)
trained on the user's text by Hugging Face `tokenizers`, imported on first use. It travels as
one JSON string in `to_dict()`, so checkpoints rebuild it offline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gptscratch.data.tokenizers.base import EOT, Tokenizer, split_for_encoding
from gptscratch.errors import UserError

if TYPE_CHECKING:
    import tokenizers

logger = logging.getLogger(__name__)

# Pieces for batch encoding, measured on 2 cores: HF `tokenizers` slows down badly on strings
# of megabytes (1.1 MB/s on one 4.7 MB string vs 3.8 MB/s batched).
_CHUNK_CHARS = 64_000
# Pieces fed to the trainer; their size does not change the result, only peak memory.
_TRAIN_CHUNK_CHARS = 1_000_000


class BPETokenizer(Tokenizer):
    """A byte-level BPE trained on the user's text. Unlike `gpt2`, a literal `<|endoftext|>`
    is read as the special token (HF always matches added tokens); decoding keeps it."""

    kind = "bpe"

    def __init__(self, tok: tokenizers.Tokenizer) -> None:
        """Wrap a trained `tokenizers.Tokenizer` (byte-level BPE with `<|endoftext|>`)."""
        self._tok = tok
        self._eot_id = tok.token_to_id(EOT)

    @classmethod
    def from_json(cls, tokenizer_json: str) -> BPETokenizer:
        """Rebuild from the JSON string that `to_dict()["tokenizer_json"]` holds."""
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(tokenizer_json))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        """Rebuild from `to_dict()`'s form."""
        return cls.from_json(d["tokenizer_json"])

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train a BPE of at most `vocab_size` ids, `<|endoftext|>` included (a small corpus may
        support fewer: a warning says so), on `text`: a string, or pieces cut where
        `split_for_encoding` cuts, fed to the trainer without a temp file."""
        from tokenizers import ByteLevelBPETokenizer

        seen = [0]  # characters fed to the trainer
        pieces = _counted(split_for_encoding(text, _TRAIN_CHUNK_CHARS)
                          if isinstance(text, str) else text, seen)
        trainer = ByteLevelBPETokenizer()
        trainer.train_from_iterator(pieces, vocab_size=vocab_size, min_frequency=2,
                                    special_tokens=[EOT], show_progress=False)
        if not seen[0]:
            raise UserError("the bpe tokenizer needs training text; give a non-empty input")
        tok = cls.from_json(trainer.to_str())
        if tok.vocab_size < vocab_size:
            logger.warning("bpe:%d: the text supports only %d ids; using that many",
                           vocab_size, tok.vocab_size)
        return tok

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    @property
    def eot_id(self) -> int | None:
        return self._eot_id

    def encode_array(self, text: str) -> np.ndarray:
        """Encode `text` to an int32 array, in parallel over newline-aligned pieces."""
        pieces = split_for_encoding(text, _CHUNK_CHARS)
        encodings = self._tok.encode_batch(pieces, add_special_tokens=False)
        arrays = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer_json": self._tok.to_str()}


def _counted(pieces: Iterable[str], seen: list[int]) -> Iterator[str]:
    """The non-empty pieces, adding their length to `seen[0]`."""
    for piece in pieces:
        if piece:
            seen[0] += len(piece)
            yield piece
