"""Speed of the memorisation check (`gptscratch sample --check-copy`) on a 5 MB corpus.

The corpus is the built-in Shakespeare (4.99 M characters, from the gptscratch cache; run
`gptscratch prepare --data shakespeare` first). For generated-like texts of 2,000 characters
(random characters; the same with a 300-character span of the corpus planted in the middle;
a real passage of the corpus) it times building the index once and each check, and compares
the longest-span search with the obvious alternative run in the same script: grow a window
over the text and test each one with Python's `in` against the whole corpus (C-speed string
search), which gives the same answer.

Each timing is repeated (3 rounds by default, interleaved: every text checked once per round,
both ways) and given as the median and the range.

    python benchmarks/copy_check.py
    python benchmarks/copy_check.py --quick --out /tmp/copy.json   # 200 kB of the corpus, once

Prints a table and writes benchmarks/results/copy_check.json (or --out), with its provenance.
Run it alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

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


def texts_for(corpus: str) -> dict[str, str]:
    """Generated-like texts of 2,000 characters: noise, noise with a planted span, a copy."""
    rng = random.Random(0)
    alphabet = sorted(set(corpus[:200_000]))
    noise = "".join(rng.choice(alphabet) for _ in range(2000))
    mid = len(corpus) // 5
    return {"random": noise,
            "planted 300": noise[:850] + corpus[mid:mid + 300] + noise[850:1700],
            "copied 2000": corpus[2 * mid:2 * mid + 2000]}


def spread(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 4),
            "range": [round(min(values), 4), round(max(values), 4)]}


def measure(corpus: str, repeats: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Index build times, and per text the check's and the naive search's times, interleaved:
    each round builds the index and times every text both ways."""
    texts = texts_for(corpus)
    builds: list[float] = []
    times: dict[str, dict[str, list[float]]] = {n: {"check": [], "naive": []} for n in texts}
    found: dict[str, tuple[int, float]] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        index = CorpusIndex(corpus)
        builds.append(time.perf_counter() - t0)
        for name, text in texts.items():
            t0 = time.perf_counter()
            report = index.check(text)
            times[name]["check"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            naive = naive_longest(text, corpus)
            times[name]["naive"].append(time.perf_counter() - t0)
            assert naive == len(report.longest), (name, naive, len(report.longest))
            found[name] = (naive, report.overlap)
    rows = []
    for name, t in times.items():
        ratios = [n / c for n, c in zip(t["naive"], t["check"], strict=True)]
        rows.append({"text": name, "longest": found[name][0],
                     "check_s": round(statistics.median(t["check"]), 3),
                     "check_s_range": spread(t["check"])["range"],
                     "naive_longest_s": round(statistics.median(t["naive"]), 3),
                     "naive_longest_s_range": spread(t["naive"])["range"],
                     "speedup": round(statistics.median(ratios), 1),
                     "speedup_range": [round(min(ratios), 1), round(max(ratios), 1)],
                     "word_4gram_overlap": round(found[name][1], 3)})
    return builds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="200 kB of the corpus, once; writes only --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/copy_check.json)")
    args = parser.parse_args()
    if args.quick and args.out is None:
        sys.exit("error: --quick writes only to an explicit --out")
    corpus = shakespeare_text()[:200_000] if args.quick else shakespeare_text()
    builds, rows = measure(corpus, 1 if args.quick else args.repeats)
    print(f"corpus {len(corpus):,} characters; index built in {statistics.median(builds):.2f} s "
          f"(median of {len(builds)})")
    print(f"{'text (2000 chars)':<18} {'longest':>8} {'check s':>8} {'naive s':>8} "
          f"{'ratio (range)':>16}")
    for r in rows:
        lo, hi = r["speedup_range"]
        print(f"{r['text']:<18} {r['longest']:>8} {r['check_s']:>8.3f} "
              f"{r['naive_longest_s']:>8.3f} {r['speedup']:>6.1f}x ({lo:.1f}-{hi:.1f})")
    out = args.out or RESULTS / "copy_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "provenance": provenance("n/a"), "repeats": len(builds),
        "corpus_chars": len(corpus), "index_build_s": round(statistics.median(builds), 3),
        "index_build_s_range": spread(builds)["range"], "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
