"""Does the model create or copy? The longest span of generated text found verbatim in the
training corpus, and how many of its word n-grams the corpus holds, both against an index built
once (`CorpusIndex`). A memorising model reproduces long passages; a generalising one, only
short phrases.

The longest span, exactly: an L-character window of the text occurs in the corpus iff a corpus
window has the same polynomial hash and a substring search confirms it (no false hit from a
collision). That is monotone in L, so L is searched; a hit is grown to its full length at once,
so a copied passage takes two or three probes, original text a binary search below 16 chars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# A fixed odd base: it is invertible modulo 2^64, which the prefix-hash trick below needs.
_BASE = 0x9E3779B97F4A7C15
_FIRST_PROBE = 16  # characters; most verdicts ("copied" or "not") are decided near here
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class CopyReport:
    """How much of a text is found in the training corpus."""

    longest: str  # the longest span of the text found verbatim in the corpus ("" if none)
    start: int  # where that span starts in the text (-1 if none)
    corpus_offset: int  # where it occurs in the corpus (character offset; -1 if none)
    corpus_line: int  # the corpus line it starts on (1-based; 0 if none)
    n: int  # the word n-gram length of the overlap figures
    ngrams: int  # how many word n-grams the text has
    ngrams_found: int  # how many of them occur in the corpus

    @property
    def overlap(self) -> float:
        """Fraction of the text's word n-grams found in the corpus (0 when it has none)."""
        return self.ngrams_found / self.ngrams if self.ngrams else 0.0


def _prefix_hashes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P (n+1,) with P[i] = hash of codes[:i], and powers B^i (n+1,), all mod 2^64.

    The recurrence P[i+1] = P[i] * B + c[i] is sequential; its closed form
    P[i] = B^(i-1) * sum_{j<i} c[j] * B^(-j) is two cumulative operations numpy can vectorise
    (uint64 arithmetic wraps, which is exactly mod 2^64).
    """
    n = len(codes)
    pows = np.cumprod(np.full(n + 1, _BASE, dtype=np.uint64))  # B^1 .. B^(n+1)
    pows = np.concatenate(([np.uint64(1)], pows[:-1]))  # B^0 .. B^n
    inv_pows = np.cumprod(np.full(n, pow(_BASE, -1, 1 << 64), dtype=np.uint64))
    inv_pows = np.concatenate(([np.uint64(1)], inv_pows[:-1]))  # B^0 .. B^-(n-1)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    if n:
        prefix[1:] = pows[:n] * np.cumsum(codes * inv_pows, dtype=np.uint64)
    return prefix, pows


def _window_hashes(prefix: np.ndarray, pows: np.ndarray, length: int) -> np.ndarray:
    """Hashes of every window of `length` items: (n - length + 1,) uint64."""
    return prefix[length:] - prefix[:-length] * pows[length]


def _codes(text: str) -> np.ndarray:
    # + 1 so that no character codes to 0.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(
        np.uint64) + np.uint64(1)


class CorpusIndex:
    """A corpus prepared for fast copy checks (build once, `check` many texts)."""

    def __init__(self, corpus: str) -> None:
        self.corpus = corpus
        self._prefix, self._pows = _prefix_hashes(_codes(corpus))
        self._sorted: dict[int, np.ndarray] = {}  # window length -> sorted corpus hashes
        words = _WORD.findall(corpus)
        self._vocab: dict[str, int] = {}
        self._word_ids = np.fromiter((self._vocab.setdefault(w, len(self._vocab)) for w in words),
                                     dtype=np.int64, count=len(words))
        self._ngrams: dict[int, np.ndarray] = {}  # n -> sorted corpus word n-gram hashes

    def _corpus_windows(self, length: int) -> np.ndarray:
        if length not in self._sorted:
            if len(self._sorted) >= 4:  # each is 8 bytes per corpus character
                self._sorted.pop(next(iter(self._sorted)))
            self._sorted[length] = np.sort(_window_hashes(self._prefix, self._pows, length))
        return self._sorted[length]

    def _occurring_window(self, text: str, prefix: np.ndarray, pows: np.ndarray,
                          length: int) -> int:
        """Start of a `length`-character window of `text` found in the corpus, or -1."""
        if length > len(text) or length > len(self.corpus):
            return -1
        corpus = self._corpus_windows(length)
        hashes = _window_hashes(prefix, pows, length)
        pos = np.minimum(np.searchsorted(corpus, hashes), len(corpus) - 1)
        for start in np.flatnonzero(corpus[pos] == hashes)[:8].tolist():
            if text[start:start + length] in self.corpus:  # rules out a hash collision
                return int(start)
        return -1

    def _extend(self, text: str, start: int, length: int) -> tuple[int, int]:
        """Grow a span of `text` known to occur in the corpus, left and right, as far as its
        first corpus occurrence keeps matching: (start, length) of the grown span."""
        offset = self.corpus.find(text[start:start + length])
        while (start + length < len(text) and offset + length < len(self.corpus)
               and text[start + length] == self.corpus[offset + length]):
            length += 1
        while start > 0 and offset > 0 and text[start - 1] == self.corpus[offset - 1]:
            start, offset, length = start - 1, offset - 1, length + 1
        return start, length

    def longest_span(self, text: str) -> tuple[int, int]:
        """(start, length) of the longest span of `text` found verbatim in the corpus;
        (-1, 0) when not even one character is."""
        prefix, pows = _prefix_hashes(_codes(text))
        best, lo, hi = -1, 0, len(text) + 1  # a span of length lo occurs; none of length hi
        probe = min(_FIRST_PROBE, len(text))
        while hi - lo > 1:
            if not lo < probe < hi:
                probe = (lo + hi) // 2
            start = self._occurring_window(text, prefix, pows, probe)
            if start < 0:
                hi = probe
                probe = (lo + hi) // 2
            else:
                # Grow the hit directly (a copied passage is found whole in one probe), then
                # ask only whether anything longer occurs anywhere.
                best, lo = self._extend(text, start, probe)
                probe = lo + 1
        return best, lo

    def ngram_overlap(self, text: str, n: int) -> tuple[int, int]:
        """(found, total): how many of the text's word n-grams occur in the corpus."""
        words = _WORD.findall(text)
        total = max(0, len(words) - n + 1)
        if total == 0 or len(self._word_ids) < n:
            return 0, total
        if n not in self._ngrams:
            self._ngrams[n] = np.sort(self._ngram_hashes(self._word_ids, n))
        ids = np.array([self._vocab.get(w, -1) for w in words], dtype=np.int64)
        known = np.convolve(ids >= 0, np.ones(n, dtype=np.int64), mode="valid") == n
        hashes = self._ngram_hashes(np.maximum(ids, 0), n)
        corpus = self._ngrams[n]
        pos = np.minimum(np.searchsorted(corpus, hashes), len(corpus) - 1)
        return int(((corpus[pos] == hashes) & known).sum()), total

    @staticmethod
    def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
        codes = ids.astype(np.uint64) + np.uint64(1)
        h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        for j in range(n):
            h = h * np.uint64(_BASE) + codes[j:len(ids) - n + 1 + j]
        return h

    def check(self, text: str, n: int = 4) -> CopyReport:
        """The longest copied span and the word n-gram overlap of `text`."""
        if n < 1:
            raise ValueError(f"n ({n}) must be >= 1")
        start, length = self.longest_span(text)
        span = text[start:start + length] if length else ""
        offset = self.corpus.find(span) if span else -1
        found, total = self.ngram_overlap(text, n)
        return CopyReport(longest=span, start=start, corpus_offset=offset,
                          corpus_line=self.corpus.count("\n", 0, offset) + 1 if offset >= 0 else 0,
                          n=n, ngrams=total, ngrams_found=found)


def describe_copy(report: CopyReport) -> str:
    """A short human-readable report: two lines."""
    if report.longest:
        shown = report.longest if len(report.longest) <= 80 else report.longest[:77] + "..."
        span = (f"longest span found in the training text: {len(report.longest)} characters "
                f"(corpus line {report.corpus_line}): {shown!r}")
    else:
        span = "no span of the text is found in the training text"
    if report.ngrams:
        grams = (f"word {report.n}-grams also in the training text: {report.ngrams_found} of "
                 f"{report.ngrams} ({report.overlap:.0%})")
    else:
        grams = f"word {report.n}-grams: the text has fewer than {report.n} words"
    return f"{span}\n{grams}"
