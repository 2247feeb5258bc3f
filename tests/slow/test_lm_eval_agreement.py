"""Three scorers agree: `gptscratch eval --task`, lm-evaluation-harness's `local-completions`
against `gptscratch serve` (no tokenizer given: it finds ours through /tokenizer_info and
/tokenize), and lm-eval's `hf` backend on the `export-hf` folder, on a small local task of each
type and a tiny model with GPT-2's tokenizer: equal accuracies, per-choice log-likelihoods
within 1e-4. Needs the `eval` extra (lm-eval)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from hf_models import make_hf_model  # noqa: E402
from serving import running  # noqa: E402

from gptscratch import api  # noqa: E402
from gptscratch.evaluation.task_files import read_task  # noqa: E402
from gptscratch.evaluation.tasks import choice_scores  # noqa: E402

CONTEXT = 64

ROWS = {
    "mc": [{"query": q, "choices": c, "gold": g} for q, c, g in [
        ("The capital of France is", ["Paris", "a small dog", "blue"], 0),
        ("Water boils at one hundred", ["degrees", "apples", "kings and queens"], 0),
        ("She opened the door and", ["walked in.", "the moon.", "seven"], 0),
        ("To be, or not to be:", ["that is the question.", "banana", "of"], 0),
        ("One, two, three,", ["four", "purple", "the end of it all"], 0),
        ("The cat sat on the", ["mat", "idea", "running quickly"], 2),
    ]],
    "schema": [{"context_options": o, "continuation": c, "gold": g} for o, c, g in [
        (["The glass fell and", "The pillow fell and"], "it broke into pieces.", 0),
        (["He was hungry, so he", "He was tired, so he"], "went to sleep.", 1),
        (["The sun rose and", "The sun set and"], "the night began.", 1),
        (["Anna won the race because", "Anna lost the race because"], "she was fast.", 0),
    ]],
    "lm": [{"context": c, "continuation": k} for c, k in [
        ("Hello, my name is", "John"), ("The quick brown fox jumps over the", "lazy dog"),
        ("One plus one is", "two"), ("It was a dark and stormy", "night"),
    ]],
}

YAML = {
    "mc": """output_type: multiple_choice
doc_to_text: "{{query}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
metric_list: [{metric: acc}, {metric: acc_norm}]""",
    "schema": """output_type: multiple_choice
doc_to_text: "{{gold}}"
doc_to_choice: "{{context_options}}"
doc_to_target: "{{continuation}}"
metric_list: [{metric: acc}]""",
    # lm-eval adds no delimiter to a loglikelihood target (its LAMBADA puts the space in the
    # target), so the space that CORE's delimiter adds is written here.
    "lm": """output_type: loglikelihood
doc_to_text: "{{context}}"
doc_to_target: "{{' ' + continuation}}"
metric_list: [{metric: acc}]""",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("agree")
    make_hf_model(folder / "hf", vocab_size=50257, n_positions=CONTEXT, n_embd=32, n_layer=2,
                  seed=3)
    ours = api.import_hf(str(folder / "hf"), folder / "ours")
    exported = api.export_hf(ours, folder / "exported")
    tasks = folder / "tasks"
    tasks.mkdir()
    for name, rows in ROWS.items():
        data = tasks / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (tasks / f"agree_{name}.yaml").write_text(
            f"task: agree_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {data}\ntest_split: test\ntarget_delimiter: \" \"\n{YAML[name]}\n",
            encoding="utf-8")
    return {"ours": ours, "exported": exported, "tasks": tasks}


def lm_eval_scores(model: str, model_args: str, tasks: Path) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=model, model_args=model_args,
                                  tasks=[f"agree_{n}" for n in ROWS], num_fewshot=0,
                                  task_manager=TaskManager(include_path=str(tasks)),
                                  batch_size=1, device="cpu", log_samples=True)
    result = {}
    for name in ROWS:
        samples = sorted(out["samples"][f"agree_{name}"], key=lambda s: s["doc_id"])
        result[name] = {
            "metrics": {k.split(",")[0]: v for k, v in out["results"][f"agree_{name}"].items()
                        if k.split(",")[0] in ("acc", "acc_norm")},
            "lls": [[float(r[0]) for r in s["filtered_resps"]] for s in samples]}
    return result


def our_scores(setup: dict[str, Any]) -> dict[str, Any]:
    loaded = api.load(setup["ours"], device="cpu", dtype="float32")
    report = api.evaluate_tasks(loaded, [setup["tasks"] / f"{n}.jsonl" for n in ROWS])
    result = {}
    for name, task_result in zip(ROWS, report.tasks, strict=True):
        task = read_task(setup["tasks"] / f"{name}.jsonl")
        lls = [[s.logprob for s in item] for item in choice_scores(loaded, task)]
        metrics = {"acc": task_result.accuracy}
        if name == "mc":
            metrics["acc_norm"] = task_result.accuracy_norm
        result[name] = {"metrics": metrics, "lls": lls}
    return result


@pytest.mark.slow
def test_three_scorers_agree(setup: dict[str, Any]) -> None:
    ours = our_scores(setup)
    hf = lm_eval_scores("hf", f"pretrained={setup['exported']},dtype=float32", setup["tasks"])
    loaded = api.load(setup["ours"], device="cpu", dtype="float32")
    with running(api.server_app(loaded)) as url:
        served = lm_eval_scores("local-completions",
                                f"base_url={url}/v1/completions,max_length={CONTEXT},"
                                "tokenized_requests=True", setup["tasks"])
    for name in ROWS:
        for other in (hf, served):
            assert other[name]["metrics"] == ours[name]["metrics"], name
            for mine, theirs in zip(ours[name]["lls"], other[name]["lls"], strict=True):
                assert theirs == pytest.approx(mine, abs=1e-4), name
    # The model is random: the scores must still differ between choices (a real test).
    assert len({round(x, 3) for row in ours["mc"]["lls"] for x in row}) > 10
