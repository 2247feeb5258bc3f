"""Preparing corpora larger than memory: gptscratch's streaming `prepare` against the machine's
limit and against nanoGPT's approach, with the GPT-2 tokenizer, on corpora generated here.

Rows, each on the same documents in the same run:
- ours: `gptscratch prepare --data FOLDER --tokenizer gpt2 --workers N` as a subprocess;
- tiktoken in memory (the limit): every document already in memory, then tiktoken's
  `encode_ordinary_batch` on all cores, 32 documents at a time (only the encoding is timed;
  the ids of 2 GB at once, as Python lists, would not fit in 24 GB);
- nanoGPT's approach (`data/openwebtext/prepare.py`): `datasets` `load_dataset` +
  `map(num_proc=N)` with tiktoken, then one uint16 memmap written in batches (with its own
  Hugging Face cache, which it fills with Arrow files).
Wall time, MB/s of text, and peak RSS of the whole process tree (sampled from /proc every
0.1 s). Ours is also run once on a corpus twice the size, to show memory does not grow with
it, and once on one large single file; `--train` adds 50 training steps from the folder.
Token counts are checked: ours must equal tiktoken's per-document counts plus one
end-of-text token per document.

The three compared rows run interleaved (round i runs each once), so the VM's slow phases fall
on all alike.

    python benchmarks/data_scale.py            # 1 GB compared (3 runs), 2 GB and 500 MB ours
    python benchmarks/data_scale.py --gb 0.1 --big-gb 0.2 --single-gb 0.05 --repeats 1
    python benchmarks/data_scale.py --quick --out /tmp/scale.json   # a few MB: that it works

Prints a table and writes benchmarks/results/data_scale.json (or --out), with its provenance.
Run it alone: it keeps both cores busy, and needs about 3x the largest corpus in free disk
space.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "data_scale.json"
MB = 2**20

IN_MEMORY = r"""
import json, sys, time
from pathlib import Path
from gptscratch.data.tokenizers.gpt2 import gpt2_encoding
files = sorted(Path(sys.argv[1]).glob("*.txt"))
docs = [f.read_text(encoding="utf-8") for f in files]
enc = gpt2_encoding()
seconds, counts = 0.0, []
for i in range(0, len(docs), 32):  # the ids of all at once (Python ints) would not fit
    started = time.perf_counter()
    ids = enc.encode_ordinary_batch(docs[i:i + 32], num_threads=int(sys.argv[2]))
    seconds += time.perf_counter() - started
    counts += [len(x) for x in ids]
    del ids
print(json.dumps({"seconds": seconds, "counts": counts}))
"""

NANOGPT = r"""
import sys
from pathlib import Path
import numpy as np
from datasets import load_dataset
from gptscratch.data.tokenizers.gpt2 import gpt2_encoding
folder, workers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
enc = gpt2_encoding()
def process(example):
    ids = enc.encode_ordinary(example["text"]) + [enc.eot_token]
    return {"ids": ids, "len": len(ids)}
files = sorted(str(p) for p in Path(folder).glob("*.txt"))
ds = load_dataset("text", data_files=files, sample_by="document", split="train",
                  num_proc=workers)
tokenized = ds.map(process, remove_columns=["text"], num_proc=workers)
total = int(np.sum(tokenized["len"], dtype=np.uint64))
arr = np.memmap(out, dtype=np.uint16, mode="w+", shape=(total,))
index = 0
shards = min(64, len(tokenized))
for i in range(shards):
    batch = tokenized.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
    ids = np.concatenate(batch["ids"])
    arr[index:index + len(ids)] = ids
    index += len(ids)
arr.flush()
print(total)
"""


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd`; its wall time, peak process-tree RSS and stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": seconds, "peak_rss": peak[0], "stdout": out}


def make_corpus(folder: Path, total_bytes: int, documents: int, seed: int) -> int:
    """Write `documents` text files of about `total_bytes` in all, each made of blocks of
    consecutive lines of the built-in plays in a shuffled order; returns the bytes written."""
    from gptscratch.data.shakespeare import shakespeare_text

    lines = shakespeare_text().splitlines(keepends=True)
    blocks = ["".join(lines[i:i + 40]) for i in range(0, len(lines), 40)]
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    per_doc = total_bytes // documents
    written = 0
    for d in range(documents):
        parts, size = [], 0
        while size < per_doc:
            block = rng.choice(blocks)
            parts.append(block)
            size += len(block.encode("utf-8"))
        (folder / f"doc-{d:05d}.txt").write_text("".join(parts), encoding="utf-8")
        written += size
    return written


def ours(data: Path, out: Path, workers: int) -> dict[str, Any]:
    run = measure([sys.executable, "-m", "gptscratch", "prepare", "--data", str(data),
                   "--tokenizer", "gpt2", "--out", str(out), "--workers", str(workers),
                   "--force", "--quiet"])
    meta = json.loads((out / "meta.json").read_text())
    run["tokens"] = meta["train_tokens"] + meta["val_tokens"]
    run["documents"] = meta["train_documents"] + meta["val_documents"]
    run["shards"] = len(meta["shards"]["train"]) + len(meta["shards"]["val"])
    return run


def in_memory(folder: Path, workers: int) -> dict[str, Any]:
    run = measure([sys.executable, "-c", IN_MEMORY, str(folder), str(workers)])
    result = json.loads(run["stdout"])
    run.update(encode_seconds=result["seconds"], counts=result["counts"])
    return run


def nanogpt(folder: Path, workers: int, scratch: Path) -> dict[str, Any]:
    cache = scratch / "hf-cache"
    run = measure([sys.executable, "-c", NANOGPT, str(folder), str(workers),
                   str(scratch / "nanogpt.bin")],
                  env={"HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1",
                       "HF_HUB_OFFLINE": "1"})
    run["tokens"] = int(run["stdout"].strip())
    shutil.rmtree(cache, ignore_errors=True)
    (scratch / "nanogpt.bin").unlink(missing_ok=True)
    return run


def summary(runs: list[dict[str, Any]], size: int, key: str = "seconds") -> dict[str, Any]:
    times = [r[key] for r in runs]
    rss = [r["peak_rss"] for r in runs]
    return {"runs": len(runs), "seconds": statistics.median(times), "seconds_min": min(times),
            "seconds_max": max(times), "mb_per_s": size / MB / statistics.median(times),
            "peak_rss_mb": max(rss) / MB, "peak_rss_mb_each": [round(r / MB) for r in rss]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="the compared corpus")
    parser.add_argument("--documents", type=int, default=600)
    parser.add_argument("--big-gb", type=float, default=2.0,
                        help="a corpus twice as large (ours only), to show memory stays flat")
    parser.add_argument("--single-gb", type=float, default=0.5, help="size of the one file")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each compared row")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--train", action="store_true",
                        help="also train 50 steps of shakespeare-bpe from the prepared folder")
    parser.add_argument("--scratch", type=Path, default=None, help="where corpora are written")
    parser.add_argument("--quick", action="store_true",
                        help="corpora of a few MB, each row once; writes only --out")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"results file (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args()
    if args.quick:
        if args.out == RESULTS:
            parser.error("--quick writes only to an explicit --out")
        args.gb, args.big_gb, args.single_gb, args.documents, args.repeats = (
            0.004, 0.008, 0.002, 20, 1)
    scratch = Path(tempfile.mkdtemp(prefix="data-scale-", dir=args.scratch))
    rows: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    try:
        main_dir, big, single = scratch / "main", scratch / "big", scratch / "single"
        size = make_corpus(main_dir, int(args.gb * 2**30), args.documents, seed=1)
        big_size = make_corpus(big, int(args.big_gb * 2**30), 2 * args.documents, seed=2)
        single_size = make_corpus(single, int(args.single_gb * 2**30), 1, seed=3)
        print(f"corpora: {size / MB:,.0f} MB in {args.documents} documents, "
              f"{big_size / MB:,.0f} MB in {2 * args.documents}, one file of "
              f"{single_size / MB:,.0f} MB", flush=True)
        limit, runs, nano, failures = compared_rounds(main_dir, scratch, args)
        add(rows, sizes, "tiktoken in memory", summary(limit, size, "encode_seconds"), size,
            args)
        expected = sum(limit[0]["counts"]) + args.documents
        add(rows, sizes, "ours", {
            **summary(runs, size), "shards": runs[0]["shards"],
            "tokens_match_tiktoken_plus_eot": all(r["tokens"] == expected for r in runs)},
            size, args)
        if args.train:
            rows["train 50 steps from it"] = train_from(scratch)
        add(rows, sizes, "nanoGPT's approach",
            {**summary(nano, size), "tokens_match": all(r["tokens"] == expected for r in nano),
             "failed": failures} if nano else {"runs": 0, "failed": failures}, size, args)
        shutil.rmtree(scratch / "out", ignore_errors=True)
        add(rows, sizes, "ours, twice the corpus",
            summary([ours(big, scratch / "out", args.workers)], big_size), big_size, args)
        shutil.rmtree(scratch / "out", ignore_errors=True)
        add(rows, sizes, "ours, one file", summary(
            [ours(single / "doc-00000.txt", scratch / "out", args.workers)], single_size),
            single_size, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(rows, sizes, args)


def add(rows: dict[str, Any], sizes: dict[str, int], name: str, row: dict[str, Any],
        size: int, args: argparse.Namespace) -> None:
    """Record a row and write the results so far (a later row may fail)."""
    rows[name], sizes[name] = {**row, "text_mb": size / MB}, size
    print(f"{name}: {json.dumps(rows[name])}", flush=True)
    write(rows, args)


def compared_rounds(folder: Path, scratch: Path, args: argparse.Namespace) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The compared rows' runs, interleaved: round i runs tiktoken in memory, ours and
    nanoGPT's approach once each (nanoGPT's is not tried again once it fails: it fails the same
    way each time). Their runs, and nanoGPT's failures."""
    limit: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    nano: list[dict[str, Any]] = []
    failures: list[str] = []
    for _ in range(args.repeats):
        limit.append(in_memory(folder, args.workers))
        runs.append(ours(folder, scratch / "out", args.workers))
        if not failures:
            try:
                nano.append(nanogpt(folder, args.workers, scratch))
            except RuntimeError as exc:
                failures.append(str(exc)[-300:])
                shutil.rmtree(scratch / "hf-cache", ignore_errors=True)
    return limit, runs, nano, failures


def train_from(scratch: Path) -> dict[str, Any]:
    """As a new user would: train from the prepared folder."""
    run = measure([sys.executable, "-m", "gptscratch", "train", "--data", str(scratch / "out"),
                   "--preset", "shakespeare-bpe", "--max-iters", "50", "--out",
                   str(scratch / "run"), "--sample-tokens", "0"])
    metrics = [json.loads(line) for line in (scratch / "run" / "metrics.jsonl").open()]
    shutil.rmtree(scratch / "run", ignore_errors=True)
    return {"seconds": run["seconds"], "peak_rss_mb": run["peak_rss"] / MB,
            "val_loss": [m["val_loss"] for m in metrics if "val_loss" in m][-1]}


def write(rows: dict[str, Any], args: argparse.Namespace) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "command": " ".join(["python", *sys.argv]),
        "provenance": provenance("n/a"),
        "workers": args.workers, "documents": args.documents, "rows": rows,
    }, indent=2) + "\n")


def report(rows: dict[str, Any], sizes: dict[str, int], args: argparse.Namespace) -> None:
    print("\n| Row | Text | Runs | Seconds (median, min-max) | MB/s | Peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        if not row.get("runs"):
            print(f"| {name} | {sizes.get(name, 0) / MB:,.0f} MB | failed | "
                  f"{'; '.join(row.get('failed', []))[-120:]} | | |")
            continue
        print(f"| {name} | {sizes[name] / MB:,.0f} MB | {row['runs']} | {row['seconds']:.1f} "
              f"({row['seconds_min']:.1f}-{row['seconds_max']:.1f}) | {row['mb_per_s']:.1f} | "
              f"{row['peak_rss_mb']:,.0f} MB |")
    ours_rate, limit_rate = rows["ours"]["mb_per_s"], rows["tiktoken in memory"]["mb_per_s"]
    print(f"\nours / tiktoken in memory: {ours_rate / limit_rate:.2f}x (target >= 0.8); "
          f"tokens equal tiktoken's plus one <|endoftext|> per document: "
          f"{rows['ours']['tokens_match_tiktoken_plus_eot']}")
    rows["ours"]["over_tiktoken"] = ours_rate / limit_rate
    write(rows, args)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
