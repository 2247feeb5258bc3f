"""Speed of the memorisation check (`gptscratch sample --check-copy`) on a 5 MB corpus.

The corpus is the built-in Shakespeare (4.99 M characters, from the gptscratch cache; run
`gptscratch prepare --data shakespeare` first). For generated-like texts of 2,000 characters
(random characters; the same with a 300-character span of the corpus planted in the middle;
a real passage of the corpus) it times building the index once and each check, and compares
the longest-span search with the obvious alternative run in the same script: grow a window
over the text and test each one with Python's `in` against the whole corpus (C-speed string
search), which gives the same answer.

    python benchmarks/copy_check.py

Prints a table and writes benchmarks/results/copy_check.json. Run it alone (under the CPU
lock on a shared machine).
"""

from __future__ import annotations

import json
import platform
import random
import time
from datetime import date
from pathlib import Path

import torch

from gptscratch.data.shakespeare import shakespeare_text
from gptscratch.evaluation.memorisation import CorpusIndex

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def naive_longest(text: str, corpus: str) -> int:
    """Longest span of `text` in `corpus` by a sliding window and substring search."""
    best, i = 0, 0
    while i + best < len(text):
        if text[i:i + best + 1] in corpus:
            best += 1
        else:
            i += 1
    return best


def main() -> None:
    corpus = shakespeare_text()
    rng = random.Random(0)
    alphabet = sorted(set(corpus[:200_000]))
    noise = "".join(rng.choice(alphabet) for _ in range(2000))
    texts = {
        "random": noise,
        "planted 300": noise[:850] + corpus[1_000_000:1_000_300] + noise[850:1700],
        "copied 2000": corpus[2_000_000:2_002_000],
    }
    t0 = time.perf_counter()
    index = CorpusIndex(corpus)
    build_s = time.perf_counter() - t0
    rows = []
    for name, text in texts.items():
        t0 = time.perf_counter()
        report = index.check(text)
        check_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = naive_longest(text, corpus)
        naive_s = time.perf_counter() - t0
        assert naive == len(report.longest), (name, naive, len(report.longest))
        rows.append({"text": name, "longest": naive, "check_s": round(check_s, 3),
                     "naive_longest_s": round(naive_s, 3),
                     "speedup": round(naive_s / check_s, 1),
                     "word_4gram_overlap": round(report.overlap, 3)})
    print(f"corpus {len(corpus):,} characters; index built in {build_s:.2f} s")
    print(f"{'text (2000 chars)':<18} {'longest':>8} {'check s':>8} {'naive s':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['text']:<18} {r['longest']:>8} {r['check_s']:>8.3f} "
              f"{r['naive_longest_s']:>8.3f} {r['speedup']:>5.1f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "copy_check.json").write_text(json.dumps({
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "corpus_chars": len(corpus),
        "index_build_s": round(build_s, 3), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
