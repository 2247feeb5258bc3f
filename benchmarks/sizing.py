"""Sizing sweep: which model shape reaches the lowest val loss in a given time on this machine.

Trains the shakespeare-char preset (the modern recipe, its batch, context and learning rates)
at each depth of the sizing ladder (`training/sizing.py`: depth d is d layers, 64 x d wide,
d heads of 64) for each wall-clock budget, on ../shared/data/tinyshakespeare.txt, and scores
each on the whole val split. Runs go budget by budget, each budget's depths one after another,
so a slow spell of the machine falls on one budget's neighbours rather than one depth.

For each run it records the training speed the run measured (its median tokens/s, evaluations
left out) and so the tokens a budget buys at that speed, `planned_tokens` = budget x tokens/s,
the quantity the sizing rule computes from its probes; their ratio to the model's parameters is
the run's tokens per parameter. The best depth at each budget gives the ratio the rule aims at
(`training/sizing.py` TOKENS_PER_PARAM), and the report marks the depth the rule, fed this
sweep's own speeds, chooses at each budget.

    python benchmarks/sizing.py                                  # 3 budgets x 5 depths, ~45 min
    python benchmarks/sizing.py --budgets 60,300 --depths 2,3,4
    python benchmarks/sizing.py --analyse benchmarks/results/sizing.json   # table + plot again
    python benchmarks/sizing.py --quick --out /tmp/sizing.json   # seconds, the repository's corpus

Prints a table, writes benchmarks/results/sizing.json (or --out) with its provenance and
docs/images/sizing.png (not with --quick). Run it alone: another busy process on this 2-core
machine slows training several-fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from provenance import provenance
from quality import CORPUS, FIXTURE, RESULTS, run

from gptscratch.model.config import ModelConfig
from gptscratch.runtime.precision import choose_precision
from gptscratch.training import sizing
from gptscratch.training.config import TrainConfig
from gptscratch.training.presets import get_preset

TRAIN_FIELDS = set(TrainConfig.field_names())

REPO = Path(__file__).resolve().parents[1]
PLOT = REPO / "docs" / "images" / "sizing.png"


def sweep(budgets: list[float], depths: list[int], corpus: Path, extra: dict[str, Any],
          save: Path) -> list[dict[str, Any]]:
    """Every run, each row written to `save` as soon as it is measured."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in budgets:
            for depth in depths:
                shape = sizing.shape_of(depth)
                name = f"d{depth}-{budget:g}s"
                row = run(name, {**shape, "max_time": budget, **extra}, Path(tmp), corpus)
                row.update(depth=depth, budget_s=budget)
                rows.append(row)
                save.write_text(json.dumps({"runs": rows}, indent=2) + "\n")
                print(f"{name}: val {row['val_loss_full_split']} after {row['steps']} steps "
                      f"({row['median_tokens_per_s']} tok/s)", flush=True)
    return rows


def probe(depths: list[int], vocab: int, extra: dict[str, Any]) -> dict[int, float]:
    """Each depth's step time as `--size auto` measures it (and caches it), in the runs'
    settings: what the rule is fed."""
    preset = get_preset("shakespeare-char")
    config = preset.train.replace(**{k: v for k, v in extra.items() if k in TRAIN_FIELDS})
    model = {**preset.model, **{k: v for k, v in extra.items() if k not in TRAIN_FIELDS}}
    device = torch.device("cpu")
    seconds = {}
    for depth in depths:
        mc = ModelConfig(vocab_size=vocab, **{**model, **sizing.shape_of(depth)})
        precision = choose_precision(config.system.dtype, device, mc.n_embd)
        seconds[depth] = sizing.cached_step_seconds(mc, config, device, precision)
    return seconds


def analyse(rows: list[dict[str, Any]], step_seconds: dict[int, float],
            tokens_per_step: int) -> dict[str, Any]:
    """Each run's tokens per parameter at the probed speed, the best depth at each budget,
    the ratio those suggest (their geometric mean), and the rule's choice at each budget."""
    for r in rows:
        r["probe_step_s"] = round(step_seconds[r["depth"]], 5)
        r["planned_tokens"] = round(r["budget_s"] / step_seconds[r["depth"]] * tokens_per_step)
        r["tokens_per_param"] = round(r["planned_tokens"] / r["params"], 4)
    by_budget: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        by_budget.setdefault(float(r["budget_s"]), []).append(r)
    best, choices = {}, {}
    for budget, group in sorted(by_budget.items()):
        top = min(group, key=lambda r: r["val_loss_full_split"])
        best[f"{budget:g}"] = {"depth": top["depth"], "val_loss": top["val_loss_full_split"],
                               "tokens_per_param": top["tokens_per_param"]}
        params = {r["depth"]: r["params"] for r in group}
        pick = sizing.choose(budget, params, {d: step_seconds[d] for d in params},
                             tokens_per_step)
        chosen = next(r for r in group if r["depth"] == pick.depth)
        choices[f"{budget:g}"] = {
            "depth": pick.depth, "val_loss": chosen["val_loss_full_split"],
            "over_best": round(chosen["val_loss_full_split"] - top["val_loss_full_split"], 4)}
    ratios = [b["tokens_per_param"] for b in best.values()]
    suggested = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    return {"tokens_per_step": tokens_per_step, "best": best,
            "suggested_tokens_per_param": round(suggested, 3),
            "rule": {"tokens_per_param": sizing.TOKENS_PER_PARAM, "choices": choices}}


def plot(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for budget in sorted({float(r["budget_s"]) for r in rows}):
        group = sorted((r for r in rows if float(r["budget_s"]) == budget),
                       key=lambda r: r["params"])
        xs = [r["params"] / 1e6 for r in group]
        ys = [r["val_loss_full_split"] for r in group]
        line, = ax.plot(xs, ys, marker="o", label=f"{budget:g} s")
        pick = summary["rule"]["choices"][f"{budget:g}"]["depth"]
        chosen = next(r for r in group if r["depth"] == pick)
        ax.plot([chosen["params"] / 1e6], [chosen["val_loss_full_split"]], marker="*",
                markersize=16, color=line.get_color(), markeredgecolor="black")
        for r, x, y in zip(group, xs, ys, strict=True):
            ax.annotate(f"d{r['depth']}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("val loss, whole split")
    ax.set_title("Shape against time budget (star: the sizing rule's choice)")
    ax.legend(title="budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print(f"\n{'budget':>7} {'depth':>5} {'params':>9} {'probe s':>8} {'tokens':>10} "
          f"{'tok/param':>9} {'val (full)':>10}")
    for r in rows:
        budget = f"{float(r['budget_s']):g}"
        mark = " <- rule" if summary["rule"]["choices"][budget]["depth"] == r["depth"] else ""
        mark += " (best)" if summary["best"][budget]["depth"] == r["depth"] else ""
        print(f"{budget:>7} {r['depth']:>5} {r['params']:>9} {r['probe_step_s']:>8} "
              f"{r['planned_tokens']:>10} {r['tokens_per_param']:>9} "
              f"{r['val_loss_full_split']:>10}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="60,150,300",
                        help="wall-clock budgets in seconds, comma-separated")
    parser.add_argument("--depths", default="2,3,4,5,6", help="ladder depths, comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset field in every run (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/sizing.json)")
    parser.add_argument("--analyse", type=Path, default=None, metavar="JSON",
                        help="no training: the table, choices and plot from a results file")
    parser.add_argument("--quick", action="store_true",
                        help="2 s runs of depths 1-2 on the repository's small corpus; "
                             "writes only --out")
    args = parser.parse_args()
    if args.quick and args.out is None:
        parser.error("--quick writes only to an explicit --out")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_flush_denormal(True)
    if args.analyse:
        report = json.loads(args.analyse.read_text())
        out = args.out or args.analyse
    else:
        budgets = [2.0, 4.0] if args.quick else [float(b) for b in args.budgets.split(",")]
        depths = [1, 2] if args.quick else [int(d) for d in args.depths.split(",")]
        extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
        if args.quick:
            extra = {"block_size": 32, "batch_size": 4, "eval_iters": 1, **extra}
        out = args.out or RESULTS / "sizing.json"
        rows = sweep(budgets, depths, FIXTURE if args.quick else CORPUS, extra, out)
        report = {"benchmark": "sizing", "provenance": provenance(rows[0]["precision"]),
                  "corpus": (FIXTURE if args.quick else CORPUS).name, "overrides": extra,
                  "runs": rows}
    rows, extra = report["runs"], report.setdefault("overrides", {})
    report.setdefault("benchmark", "sizing")
    report.setdefault("corpus", CORPUS.name)
    if "provenance" not in report:  # rows saved by a sweep that stopped before its report
        report["provenance"] = provenance(rows[0]["precision"], ["python", "benchmarks/sizing.py"])
    preset = get_preset("shakespeare-char")
    tokens_per_step = (extra.get("batch_size", preset.train.optim.batch_size)
                       * extra.get("block_size", preset.model["block_size"]))
    seconds = probe(sorted({r["depth"] for r in rows}), rows[0]["vocab_size"], extra)
    report.update(analyse(rows, seconds, tokens_per_step))
    table(rows, report)
    print(f"\nbest depth's tokens per parameter, geometric mean over the budgets: "
          f"{report['suggested_tokens_per_param']} (the rule uses {sizing.TOKENS_PER_PARAM})")
    if not args.quick:
        plot(report["runs"], report, PLOT)
        print(f"wrote {PLOT}")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
