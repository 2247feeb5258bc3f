"""Chat fine-tuning (SFT) on the built-in questions: what it teaches the main job's model.

Every step is a real `gptscratch` command in a fresh process, on the CPU in fp32:

  1. the base: the README's main job (`gptscratch train --preset shakespeare-char --data
     shakespeare`, its 4.5-minute budget), or `--base RUN` to reuse one;
  2. the base on the held-out questions (`gptscratch eval --task shakespeare:questions`):
     zero-shot and with `--shots 3` (three solved examples of the same kind before each);
  3. full SFT (`gptscratch train --sft --init-from BASE`, its defaults), timed, then scored
     zero-shot through its chat template;
  4. LoRA SFT (the same with `--lora-rank 8`, adapters on attention, the markers' rows
     trained beside them), timed, scored.

Accuracy is exact match of the answer's first line (`evaluation.tasks.final_answer`), per
question kind (40 held-out questions each) and their mean. Training is seeded; each run is
one measurement (its wall time is that run's, not a speed comparison between rows).

    python benchmarks/sft.py                                 # ~20 minutes on 2 cores
    python benchmarks/sft.py --base out/shakespeare-char     # reuse a main-job run
    python benchmarks/sft.py --quick --out /tmp/sft.json     # a tiny model, a few steps and
                                                             # questions: that it works (~1 min)

Prints a table and writes benchmarks/results/sft.json (or --out), with its provenance. Run it
alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GPT = [sys.executable, "-m", "gptscratch"]
COMMON = ["--device", "cpu", "--dtype", "float32", "--sample-tokens", "0"]
# --quick: a tiny char model, a few steps, a few questions of each kind.
QUICK_BASE = ["--preset", "shakespeare-char-gpt2", "--data", "shakespeare", "--block-size", "128",
              "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--max-iters", "10",
              "--eval-interval", "10", "--eval-iters", "1", "--batch-size", "4"]
QUICK_SFT = ["--epochs", "0.002", "--eval-iters", "1", "--batch-size", "4"]


def run(cmd: list[str]) -> tuple[float, str, str]:
    """Run a command; its wall time, stdout and stderr (a failure stops the benchmark)."""
    start = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    return time.perf_counter() - start, p.stdout, p.stderr


def score(ckpt: Path, shots: int, limit: int | None) -> dict[str, Any]:
    """`gptscratch eval --task shakespeare:questions` of a checkpoint, as JSON."""
    cmd = [*GPT, "eval", "--ckpt", str(ckpt), "--task", "shakespeare:questions", "--shots",
           str(shots), "--device", "cpu", "--json", "-q"]
    seconds, out, _ = run(cmd + (["--limit", str(limit)] if limit else []))
    report = json.loads(out)
    kinds = {t["name"].removeprefix("shakespeare:questions-"): round(t["accuracy"], 4)
             for t in report["tasks"]}
    return {"accuracy": round(sum(kinds.values()) / len(kinds), 4), "per_kind": kinds,
            "items": sum(t["items"] for t in report["tasks"]), "shots": shots,
            "eval_s": round(seconds, 1)}


def train(args: list[str], out: Path) -> dict[str, Any]:
    seconds, stdout, stderr = run([*GPT, "train", *args, "--out", str(out), *COMMON])
    done = [line for line in (stdout + stderr).splitlines() if "done: step" in line]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "val_loss" in m]
    return {"wall_s": round(seconds, 1), "steps": evals[-1]["step"] if evals else None,
            "best_val_loss": round(min(m["val_loss"] for m in evals), 4) if evals else None,
            "train_s": round(max(m.get("elapsed", 0.0) for m in metrics), 1),
            "log": done[-1] if done else ""}


def measure(base: Path | None, work: Path, quick: bool) -> dict[str, Any]:
    limit = 5 if quick else None  # --shots 3 needs more than 3 items a task
    rows: dict[str, Any] = {}
    if base is None:
        base = work / "base"
        rows["base_training"] = train(
            QUICK_BASE if quick else ["--preset", "shakespeare-char", "--data", "shakespeare"],
            base)
    rows["base_zero_shot"] = score(base, 0, limit)
    rows["base_3_shot"] = score(base, 3, limit)
    extra = QUICK_SFT if quick else []
    for name, flags in (("sft_full", []), ("sft_lora_r8", ["--lora-rank", "8"])):
        out = work / name
        rows[name] = {**train(["--sft", "--init-from", str(base), *flags, *extra], out),
                      **score(out, 0, limit)}
    return {"base": str(base), "rows": rows}


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    kinds = list(next(iter(r for r in rows.values() if "per_kind" in r))["per_kind"])
    head = f"{'row':<16} {'train s':>8} " + " ".join(f"{k[:10]:>10}" for k in kinds) + \
        f" {'mean':>6}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        if "per_kind" not in r:
            continue
        train_s = f"{r['wall_s']:.0f}" if "wall_s" in r else "-"
        lines.append(f"{name:<16} {train_s:>8} " + " ".join(
            f"{r['per_kind'][k]:>10.3f}" for k in kinds) + f" {r['accuracy']:>6.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None,
                        help="a main-job run to fine-tune (default: train one, 4.5 minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model and 5 questions of each kind: that the script works")
    parser.add_argument("--out", type=Path, default=RESULTS / "sft.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        result = measure(args.base, Path(tmp), args.quick)
    result["provenance"] = provenance("float32")
    result["settings"] = {"questions": "shakespeare:questions (40 held-out per kind)",
                          "base_command": "gptscratch train --preset shakespeare-char "
                                          "--data shakespeare" if args.base is None
                          else f"given: {args.base}",
                          "sft_command": "gptscratch train --sft --init-from BASE "
                                         "[--lora-rank 8]",
                          "quick": args.quick}
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
