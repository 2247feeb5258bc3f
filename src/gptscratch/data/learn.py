"""Learning a tokenizer from a stream of text: a `char` vocabulary from every document, a
`bpe:N` from a sample of the training documents (`--bpe-sample` megabytes)."""

from __future__ import annotations

from collections.abc import Iterator

from gptscratch.data.sources import Source
from gptscratch.data.splits import split_pieces
from gptscratch.data.tokenizers import CharTokenizer, Tokenizer, build_tokenizer
from gptscratch.errors import UserError


def learn_tokenizer(spec: str, src: Source, val_fraction: float, lowercase: bool,
                    bpe_sample_mb: float) -> Tokenizer:
    """Build the tokenizer `spec` names: `char` learns its vocabulary from a pass over every
    document; `bpe:N` learns its merges from the first `bpe_sample_mb` of training text."""
    if spec == "gpt2":
        return build_tokenizer(spec)
    seen = [0, 0]  # characters read; 1 once the stream has ended
    if spec == "char":
        texts = (t.lower() if lowercase else t for doc in src.documents() for t in doc.pieces)
    else:
        texts = (p.text.lower() if lowercase else p.text
                 for p in split_pieces(src, val_fraction) if not p.val)
    sample = _counted(texts, seen, None if spec == "char" else int(bpe_sample_mb * 2**20))
    try:
        if spec == "char":  # an end-of-text id only where there are documents to keep apart
            return CharTokenizer.from_text(sample, eot=not src.one_document)
        return build_tokenizer(spec, sample)
    except UserError:
        if seen == [0, 1]:
            raise UserError(f"{src.description} is empty; give text with some content") from None
        raise


def _counted(texts: Iterator[str], seen: list[int], limit: int | None) -> Iterator[str]:
    """The texts, counting their characters into `seen[0]`, until `limit` of them (if set);
    `seen[1]` becomes 1 when the texts ran out."""
    for text in texts:
        seen[0] += len(text)
        yield text
        if limit is not None and seen[0] >= limit:
            return
    seen[1] = 1
