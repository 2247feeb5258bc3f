"""Benchmark tasks: how fast `gptscratch eval --task` scores, against lm-evaluation-harness's
`hf` backend on the same model, task and machine; and what the 5-minute main job scores on the
built-in tasks, beside chance.

Speed. The task is made here in HellaSwag's shape: `--items` multiple-choice questions (default
100), each a context of 45 words of tinyshakespeare (~60 GPT-2 tokens) and four endings of 15
words (~20 tokens), the true next 15 words among three from elsewhere. The model is GPT-2
124M's shape with random weights (offline; the speed does not depend on the values), made by
transformers and saved as a Hugging Face folder, which both sides load. Each method runs in a
fresh process, in fp32, with the model loaded before the clock starts and a warm-up on the
task's first 2 items:
- ours: `api.evaluate_tasks(loaded, [task.jsonl], batch_size=B)` (the choices of a question
  share their context, which runs once);
- lm-eval: `simple_evaluate` with an `HFLM(pretrained=folder, batch_size=B)` made beforehand,
  the task a YAML over the same JSONL (`multiple_choice`, acc and acc_norm), its task index
  built before the clock too.
Both read the task file inside the timing. `--repeats` rounds (default 3) run both methods once
each, interleaved; items/s is the median round's, with every round's and their range. Both
must give the same accuracies (recorded).

The main job. `--ckpt RUN` scores a run given; otherwise the script trains `shakespeare-char`
on the built-in corpus for its 270 s (the README's main job), then scores the three built-in
tasks (`eval --task shakespeare`) and gives chance beside them.

    python benchmarks/tasks.py                                 # ~15 minutes
    python benchmarks/tasks.py --ckpt out/shakespeare-char     # the main job's run, given
    python benchmarks/tasks.py --quick --out /tmp/t.json       # a tiny model: that it works

Prints a table and writes benchmarks/results/tasks.json (or --out), with its provenance. Needs
the `eval` extra (lm-eval). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "tasks.json"
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SHAPES = {"124m": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024),
          "tiny": dict(n_embd=64, n_layer=2, n_head=2, n_positions=256)}
METHODS = ("ours", "lm-eval")
YAML = """task: bench_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: " "
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
"""


def make_task(folder: Path, items: int, corpus: Path) -> Path:
    """A HellaSwag-shaped task from the corpus's words, and lm-eval's YAML over it."""
    words = corpus.read_text(encoding="utf-8").split()
    rng = random.Random(0)
    rows = []
    for _ in range(items):
        start = rng.randrange(len(words) - 60)
        endings = [" ".join(words[start + 45:start + 60])]
        while len(endings) < 4:
            other = rng.randrange(len(words) - 15)
            endings.append(" ".join(words[other:other + 15]))
        order = list(range(4))
        rng.shuffle(order)
        rows.append({"query": " ".join(words[start:start + 45]),
                     "choices": [endings[i] for i in order], "gold": order.index(0)})
    data = folder / "bench_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "bench_mc.yaml").write_text(YAML.format(data=data), encoding="utf-8")
    return data


def make_model(folder: Path, shape: str) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, **SHAPES[shape])
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    from gptscratch.data.tokenizers import gpt2_hf_tokenizer

    gpt2_hf_tokenizer().save_pretrained(folder)
    return folder


def child(method: str, model: Path, task: Path, batch: int) -> dict[str, Any]:
    """One timed scoring in this (fresh) process; the figures as a dict."""
    if method == "ours":
        from gptscratch import api

        loaded = api.load(model, device="cpu", dtype="float32")
        api.evaluate_tasks(loaded, [task], limit=2, batch_size=batch)  # warm-up
        start = time.perf_counter()
        report = api.evaluate_tasks(loaded, [task], batch_size=batch)
        seconds = time.perf_counter() - start
        result = report.tasks[0]
        return {"seconds": seconds, "acc": result.accuracy, "acc_norm": result.accuracy_norm}
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model), batch_size=batch, device="cpu", dtype="float32")
    manager = TaskManager(include_path=str(task.parent))
    lm_eval.simple_evaluate(model=lm, tasks=["bench_mc"], task_manager=manager, limit=2)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=["bench_mc"], task_manager=manager)
    seconds = time.perf_counter() - start
    metrics = out["results"]["bench_mc"]
    return {"seconds": seconds, "acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"]}


def run_child(method: str, model: Path, task: Path, batch: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--model", str(model),
                           "--task", str(task), "--batch", str(batch)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"the {method} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(shape: str, items: int, repeats: int, batch: int, corpus: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_model(folder / "model", shape)
        task = make_task(folder, items, corpus)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
        for round_ in range(repeats):
            for method in METHODS[round_ % 2:] + METHODS[:round_ % 2]:
                result = run_child(method, model, task, batch)
                result["items_per_s"] = items / result["seconds"]
                runs[method].append(result)
                print(f"  round {round_ + 1}: {method:<8} {result['items_per_s']:8.2f} items/s "
                      f"(acc {result['acc']:.3f}, acc_norm {result['acc_norm']:.3f})",
                      flush=True)
    rows = {}
    for method, results in runs.items():
        rates = [r["items_per_s"] for r in results]
        rows[method] = {"items_per_s": round(statistics.median(rates), 2),
                        "items_per_s_runs": [round(r, 2) for r in rates],
                        "items_per_s_range": [round(min(rates), 2), round(max(rates), 2)],
                        "acc": results[0]["acc"], "acc_norm": results[0]["acc_norm"]}
    ours, theirs = rows["ours"], rows["lm-eval"]
    return {"shape": shape, "items": items, "choices": 4, "batch_size": batch,
            "repeats": repeats, "rows": rows,
            "ours_over_lm_eval": round(ours["items_per_s"] / theirs["items_per_s"], 2),
            "ours_over_lm_eval_range": [
                round(ours["items_per_s_range"][0] / theirs["items_per_s_range"][1], 2),
                round(ours["items_per_s_range"][1] / theirs["items_per_s_range"][0], 2)],
            "same_accuracies": (ours["acc"], ours["acc_norm"]) == (theirs["acc"],
                                                                  theirs["acc_norm"])}


def main_job(ckpt: str | None, quick: bool) -> dict[str, Any]:
    from gptscratch import api

    with tempfile.TemporaryDirectory() as tmp:
        run = ckpt
        trained = None
        if run is None:
            run = str(Path(tmp) / "shakespeare-char")
            overrides = (dict(max_iters=5, max_time=0.0, n_layer=1, n_embd=32, n_head=2,
                              eval_iters=1, warmup_iters=1, dtype="float32") if quick else {})
            result = api.train("shakespeare-char", "shakespeare", run, overrides=overrides)
            trained = {"steps": result.step, "train_seconds": round(result.elapsed, 1),
                       "val_loss_estimate": round(result.val_loss, 4)}
        report = api.evaluate_tasks(run, ["shakespeare"], limit=10 if quick else None)
    tasks = [{k: (round(v, 4) if isinstance(v, float) else v)
              for k, v in vars(t).items() if k not in ("source", "format")}
             for t in report.tasks]
    return {"ckpt": ckpt or "shakespeare-char trained here on the built-in corpus",
            "training": trained, "tasks": tasks, "core": round(report.core, 4),
            "seconds": round(report.seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--shape", choices=list(SHAPES), default="124m")
    parser.add_argument("--ckpt", default=None, help="score this run instead of training one")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model, 8 items, one round, a 5-step main job")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.task, args.batch)))
        return
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs lm-eval: pip install -c constraints.txt "
                         "-e '.[eval]'") from None
    if args.quick:
        args.items, args.repeats, args.shape = 8, 1, "tiny"
    # --quick reads the repository's own text (tests never read ../shared).
    corpus = REPO / "tests" / "fixtures" / "plays.txt" if args.quick else CORPUS
    if not corpus.is_file():
        raise SystemExit(f"error: {corpus} not found; this benchmark needs ../shared/data")
    started = time.perf_counter()
    print(f"speed: {args.items} questions x 4 choices, {args.shape}, batch {args.batch}, "
          f"{args.repeats} round(s)", flush=True)
    result = {"benchmark": "tasks", "provenance": provenance("float32"), "corpus": corpus.name,
              "speed": speed(args.shape, args.items, args.repeats, args.batch, corpus)}
    print("main job on the built-in tasks", flush=True)
    result["main_job"] = main_job(args.ckpt, args.quick)
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    s = result["speed"]
    print(f"\n{'method':<10} {'items/s (median)':>16} {'range':>16} {'acc':>6} {'acc_norm':>8}")
    for method, row in s["rows"].items():
        low, high = row["items_per_s_range"]
        print(f"{method:<10} {row['items_per_s']:>16} {f'{low}-{high}':>16} {row['acc']:>6.3f} "
              f"{row['acc_norm']:>8.3f}")
    print(f"ours / lm-eval: {s['ours_over_lm_eval']}x (range {s['ours_over_lm_eval_range']}); "
          f"same accuracies: {s['same_accuracies']}\n")
    print(f"{'task':<24} {'acc':>6} {'acc_norm':>8} {'chance':>7} {'centered':>8}")
    for t in result["main_job"]["tasks"]:
        print(f"{t['name']:<24} {t['accuracy']:>6.3f} {t['accuracy_norm']:>8.3f} "
              f"{t['chance']:>7.3f} {t['centered']:>8.3f}")
    print(f"CORE {result['main_job']['core']}")
    out = args.out or RESULTS
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
