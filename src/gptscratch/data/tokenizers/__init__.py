"""Text to token ids and back: three tokenizers behind one small protocol.

- `base`: the `Tokenizer` protocol, the end-of-text token, and helpers every kind shares;
- `char`, `gpt2`, `trained_bpe`: the three kinds (`char`, `gpt2`, `bpe:N`);
- `registry`: building a tokenizer from its spec, saving it, rebuilding it offline;
- `hf_files`: our tokenizers as Hugging Face `tokenizer.json` files, and back.

The names most callers need are importable from here.
"""

from gptscratch.data.tokenizers.base import EOT, Tokenizer, split_for_encoding
from gptscratch.data.tokenizers.char import CharTokenizer
from gptscratch.data.tokenizers.gpt2 import GPT2Tokenizer, gpt2_hf_tokenizer
from gptscratch.data.tokenizers.registry import (
    build_tokenizer,
    load_tokenizer,
    parse_tokenizer_spec,
    save_tokenizer,
    tokenizer_from_dict,
)
from gptscratch.data.tokenizers.trained_bpe import BPETokenizer

__all__ = ["EOT", "Tokenizer", "split_for_encoding", "CharTokenizer", "GPT2Tokenizer",
           "gpt2_hf_tokenizer", "BPETokenizer", "build_tokenizer", "load_tokenizer",
           "parse_tokenizer_spec", "save_tokenizer", "tokenizer_from_dict"]
