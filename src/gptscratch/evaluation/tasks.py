"""Benchmark tasks (`gptscratch eval --task`): a model's accuracy on questions, beside its loss.

Every choice of every item is one request, `(context ids, continuation ids)`, encoded as
lm-evaluation-harness encodes it (the context's trailing spaces move to the continuation; the
continuation is what the whole text adds to the context's ids). The choices of a multiple-choice
item share their context, which then runs through the model once; other requests run in
batches (longest first, right-padded). The LM head runs only where a continuation token is
predicted: a choice's score is the summed log-probability of its continuation, and whether
greedy decoding would have produced it. An item's answer is its likeliest choice by the sum
(`accuracy`) and by the sum per character of the choice (`accuracy_norm`: lm-eval's
`acc_norm`, the figure papers publish); a language-modelling item is right when greedy decoding
reproduces it, and a generative one when the final answer of the answer generated greedily
(through the generation engine) is the item's. `centered` rescales accuracy so that chance is
0 and a perfect score 1, and `core` is the mean of the tasks' centered accuracies (the CORE
metric of DCLM and nanochat).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gptscratch.checkpoints.load import LoadedModel, ModelSource, check_quantize, load_model
from gptscratch.data.tokenizers import Tokenizer, chat_template_of
from gptscratch.errors import UserError
from gptscratch.evaluation.task_files import (
    GENERATIVE,
    LANGUAGE_MODELING,
    MULTIPLE_CHOICE,
    Task,
    read_task,
)
from gptscratch.model.gpt import GPT
from gptscratch.model.kv_cache import KVCache
from gptscratch.runtime.precision import choose_precision

FEW_SHOT_SEPARATOR = "\n\n"  # between few-shot examples, and before the question (CORE's)
SHOT_SEED = 1234  # few-shot examples of item i are drawn with Random(SHOT_SEED + i)
ANSWER_TOKENS = 64  # the most tokens a generated answer may take
ANSWER_STOP = "\n\n"  # a generated answer ends at a blank line (a few-shot example's end)

Request = tuple[list[int], list[int]]  # (context ids, continuation ids)
AutocastFactory = Callable[[], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class ChoiceScore:
    """A choice's continuation under the model: its summed log-probability (nats), its
    number of tokens, and whether each of its tokens was the model's most likely."""

    logprob: float
    tokens: int
    greedy: bool


@dataclass(frozen=True)
class TaskResult:
    """One task's scores; accuracies and chance are fractions of the items."""

    name: str
    kind: str
    format: str
    source: str
    items: int
    accuracy: float
    accuracy_norm: float
    chance: float
    centered: float  # (accuracy - chance) / (1 - chance); the length-normalised for choices


@dataclass(frozen=True)
class TaskReport:
    """Every task's result, their mean centered accuracy and the settings that made them."""

    tasks: list[TaskResult]
    core: float
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": [asdict(t) for t in self.tasks], "core": self.core,
                "settings": self.settings, "seconds": round(self.seconds, 3),
                "items_per_s": round(sum(t.items for t in self.tasks) / self.seconds, 2)
                if self.seconds > 0 else None}

    def table(self) -> str:
        """A plain-text table: a row per task, then the CORE mean."""
        w = max([24, *(len(t.name) for t in self.tasks)])  # names are shown whole
        head = f"{'task':<{w}} {'type':<18} {'items':>6} {'acc':>7} {'acc_norm':>8} " \
               f"{'chance':>7} {'centered':>8}"
        lines = [head, "-" * len(head)]
        for t in self.tasks:
            lines.append(f"{t.name:<{w}} {t.kind:<18} {t.items:>6} {t.accuracy:>7.4f} "
                         f"{t.accuracy_norm:>8.4f} {t.chance:>7.4f} {t.centered:>8.4f}")
        lines.append(f"CORE (mean centered accuracy over {len(self.tasks)} task"
                     f"{'s' if len(self.tasks) != 1 else ''}): {self.core:.4f}")
        return "\n".join(lines)


def encode_request(tokenizer: Tokenizer, context: str, continuation: str) -> Request:
    """A choice's ids as lm-evaluation-harness makes them: trailing spaces of the context
    move to the continuation, and the continuation is what encoding the whole text adds to the
    context's ids (so a BPE merge across the boundary goes to the continuation). An empty
    context becomes the end-of-text token."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        if tokenizer.eot_id is None:
            raise UserError("a question has an empty context, and this model's tokenizer has "
                            "no end-of-text token to stand for it; give every question a context")
        return [tokenizer.eot_id], tokenizer.encode(continuation)
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def check_request(request: Request, block_size: int) -> None:
    """Raises UserError for a continuation that has no tokens or does not fit the context."""
    continuation = request[1]
    if not continuation:
        raise UserError("a choice's continuation encodes to no tokens; give every choice "
                        "some text")
    if len(continuation) > block_size:
        raise UserError(f"a choice's continuation is {len(continuation)} tokens, longer than "
                        f"the model's context ({block_size}); it cannot be scored")


def read_scores(logits: torch.Tensor, continuations: Sequence[Sequence[int]]
                ) -> list[ChoiceScore]:
    """Each continuation's score from the logits that predict its tokens: (N, V), the rows of
    the continuations one after another, N their total length."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    target = torch.tensor([t for cont in continuations for t in cont], device=logits.device)
    chosen = logprobs.gather(1, target[:, None])[:, 0].cpu()
    right = (logprobs.argmax(dim=-1) == target).cpu()
    scores, start = [], 0
    for cont in continuations:
        k = len(cont)
        scores.append(ChoiceScore(float(chosen[start:start + k].sum()), k,
                                  bool(right[start:start + k].all())))
        start += k
    return scores


@torch.no_grad()
def score_requests(model: GPT, requests: Sequence[Request], *, batch_size: int = 16,
                   autocast: AutocastFactory = contextlib.nullcontext,
                   progress: Callable[[int], None] | None = None) -> list[ChoiceScore]:
    """Each request's `ChoiceScore`, in order. A request longer than the context keeps its
    last block_size + 1 tokens (the context is cropped from the left). Requests run longest
    first, `batch_size` to a forward pass, right-padded (a causal model's earlier positions
    never see the padding); `progress(n)` hears of each batch's n requests."""
    T = model.config.block_size
    device = next(model.parameters()).device
    for request in requests:
        check_request(request, T)
    order = sorted(range(len(requests)), key=lambda i: -sum(map(len, requests[i])))
    scores: list[ChoiceScore | None] = [None] * len(requests)
    for first in range(0, len(order), batch_size):
        chunk = order[first:first + batch_size]
        inputs = [(requests[i][0] + requests[i][1])[-(T + 1):][:-1] for i in chunk]
        x = torch.zeros(len(chunk), max(map(len, inputs)), dtype=torch.long)
        for b, ids in enumerate(inputs):
            x[b, :len(ids)] = torch.tensor(ids)
        with autocast():
            features = model.features(x.to(device))  # (B, L, C)
            # The positions that predict continuation tokens: the last len(cont) of each row.
            rows: list[int] = []
            positions: list[int] = []
            for b, i in enumerate(chunk):
                n, cont = len(inputs[b]), requests[i][1]
                rows += [b] * len(cont)
                positions += range(n - len(cont), n)
            logits = model.logits(features[rows, positions])  # (N, V)
        for i, score in zip(chunk, read_scores(logits, [requests[i][1] for i in chunk]),
                            strict=True):
            scores[i] = score
        if progress is not None:
            progress(len(chunk))
    return [s for s in scores if s is not None]


def with_shots(task: Task, shots: int, seed: int = SHOT_SEED) -> Task:
    """The task with `shots` solved examples before every question: for item i, drawn from
    the task's other items with `Random(seed + i)`, each its right choice's whole text, then
    FEW_SHOT_SEPARATOR."""
    if shots == 0:
        return task
    if shots >= len(task.items):
        raise UserError(f"--shots {shots} needs more than {shots} items in {task.name}, which "
                        f"has {len(task.items)}; give fewer shots")
    items = []
    for i, item in enumerate(task.items):
        others = [j for j in range(len(task.items)) if j != i]
        examples = [task.items[j] for j in random.Random(seed + i).sample(others, shots)]
        prefix = "".join(e.gold_text() + FEW_SHOT_SEPARATOR for e in examples)
        items.append(dataclasses.replace(item, contexts=tuple(prefix + c for c in item.contexts)))
    return Task(task.name, task.kind, tuple(items), task.source, task.format)


def _first_best(values: Sequence[float]) -> int:
    """The index of the largest value, the first on a tie (numpy's argmax, as lm-eval)."""
    return max(range(len(values)), key=values.__getitem__)


def task_result(task: Task, scores: Sequence[Sequence[ChoiceScore]]) -> TaskResult:
    """A task's accuracies from its items' choice scores."""
    right = right_norm = 0
    chance = 0.0
    for item, choices in zip(task.items, scores, strict=True):
        if task.kind in (LANGUAGE_MODELING, GENERATIVE):
            right += choices[0].greedy
            right_norm += choices[0].greedy
            continue
        sums = [c.logprob for c in choices]
        # lm-eval's acc_norm: per character of the choice (its delimiter not counted). A
        # schema's choices share their continuation, so there it equals accuracy.
        per_char = [c.logprob / max(1, len(text))
                    for c, text in zip(choices, item.continuations, strict=True)]
        right += _first_best(sums) == item.gold
        right_norm += _first_best(per_char) == item.gold
        chance += 1.0 / item.choices
    n = len(task.items)
    accuracy, accuracy_norm, chance = right / n, right_norm / n, chance / n
    headline = accuracy_norm if task.kind == MULTIPLE_CHOICE else accuracy
    centered = (headline - chance) / (1.0 - chance)
    return TaskResult(task.name, task.kind, task.format, task.source, n, accuracy,
                      accuracy_norm, chance, centered)


def score_task(loaded: LoadedModel, task: Task, *, batch_size: int = 16,
               autocast: AutocastFactory = contextlib.nullcontext,
               progress: Callable[[int], None] | None = None) -> TaskResult:
    """One task's result under a loaded model."""
    return task_result(task, choice_scores(loaded, task, batch_size=batch_size,
                                           autocast=autocast, progress=progress))


def choice_scores(loaded: LoadedModel, task: Task, *, batch_size: int = 16,
                  autocast: AutocastFactory = contextlib.nullcontext,
                  progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
    """Every choice's score, item by item. The choices of an item that share their context
    (multiple choice) are scored with the context run once (`score_shared_contexts`, several
    questions a pass); the rest in batches (`score_requests`); a generative item's one
    choice by answering it (`answer_questions`)."""
    if task.kind == GENERATIVE:
        return answer_questions(loaded, task, batch_size, progress)
    T = loaded.model.config.block_size
    per_item: list[list[Request]] = []
    for item in task.items:
        requests = []
        for context, continuation in zip(item.contexts, item.continuations, strict=True):
            try:
                request = encode_request(loaded.tokenizer, context,
                                         item.delimiter + continuation)
                check_request(request, T)
            except UserError as e:
                raise UserError(f"{item.where}: {e}") from None
            requests.append(request)
        per_item.append(requests)
    shared = [i for i, r in enumerate(per_item) if len(r) > 1 and shares_context(r, T)]
    apart = [i for i in range(len(per_item)) if i not in set(shared)]
    scores: dict[int, list[ChoiceScore]] = {}
    # Longest contexts first, as many questions to a pass as `batch_size` choices allow and
    # the longest context and longest choice together fit in the model's context.
    shared.sort(key=lambda i: -len(per_item[i][0][0]))

    def fits(batch: list[int]) -> bool:
        width = max(len(per_item[i][0][0]) for i in batch)
        longest = max(len(r[1]) for i in batch for r in per_item[i])
        return (sum(len(per_item[i]) for i in batch) <= batch_size
                and width + longest - 1 <= T)

    while shared:
        take = 1
        while take < len(shared) and fits(shared[:take + 1]):
            take += 1
        batch, shared = shared[:take], shared[take:]
        for i, got in zip(batch, score_shared_contexts(loaded.model, [per_item[i] for i in batch],
                                                       autocast=autocast), strict=True):
            scores[i] = got
        if progress is not None:
            progress(sum(len(per_item[i]) for i in batch))
    flat = [r for i in apart for r in per_item[i]]
    batched = iter(score_requests(loaded.model, flat, batch_size=batch_size, autocast=autocast,
                                  progress=progress))
    for i in apart:
        scores[i] = [next(batched) for _ in per_item[i]]
    return [scores[i] for i in range(len(per_item))]


def final_answer(text: str) -> str:
    """What is compared of an answer: the part after GSM8K's `####` where there is one, its
    first line, without case, spaces at the ends, `$`, commas between digits or a full stop
    at the end."""
    text = text.rsplit("####", 1)[-1].strip()
    text = text.splitlines()[0] if text else ""
    text = re.sub(r"(?<=\d),(?=\d)", "", text).replace("$", "")
    return " ".join(text.strip().rstrip(".").lower().split())


def answer_questions(loaded: LoadedModel, task: Task, batch_size: int,
                     progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
    """A generative task's items answered greedily through the one generation engine, in
    batches: each a one-choice score, `greedy` True when the final answers match. A model with
    a chat template (`train --sft`) is asked each bare question as a user message (zero-shot:
    it was taught to answer) and answers up to its end-of-turn marker."""
    from gptscratch.data.conversations import Message
    from gptscratch.generation.config import GenerationConfig
    from gptscratch.generation.stream import complete

    config = GenerationConfig(max_new_tokens=ANSWER_TOKENS, temperature=0.0,
                              stop=(ANSWER_STOP,))
    tokenizer = loaded.tokenizer
    template = chat_template_of(tokenizer)
    scores = []
    for first in range(0, len(task.items), batch_size):
        chunk = task.items[first:first + batch_size]
        ids = None
        if template is not None and all(item.question for item in chunk):
            ids = [template.prompt_ids(tokenizer, [Message("user", item.question)])
                   for item in chunk]
        try:
            answers = complete(loaded, [item.contexts[0] for item in chunk], config,
                               prompt_ids=ids)
        except UserError as e:
            raise UserError(f"{chunk[0].where} (or one of the {len(chunk)} after it): {e}") \
                from None
        for item, answer in zip(chunk, answers, strict=True):
            right = final_answer(answer.text) == final_answer(item.continuations[0])
            scores.append([ChoiceScore(sum(answer.logprobs), len(answer.token_ids), right)])
        if progress is not None:
            progress(len(chunk))
    return scores


def shares_context(requests: Sequence[Request], block_size: int) -> bool:
    """Whether the choices have one context and each fits the model's context uncropped."""
    context = requests[0][0]
    return (all(r[0] == context for r in requests)
            and len(context) + max(len(r[1]) for r in requests) - 1 <= block_size)


@torch.no_grad()
def score_shared_contexts(model: GPT, groups: Sequence[Sequence[Request]], *,
                          autocast: AutocastFactory = contextlib.nullcontext
                          ) -> list[list[ChoiceScore]]:
    """The scores of several questions whose choices share a context each (`shares_context`).
    The contexts run once, as one left-padded batch; each context's keys and values are then
    copied to a row per choice, and all the choices run as one right-padded batch after them.
    For a HellaSwag question (a context of ~60 tokens, four endings of ~20) that is ~140
    positions through the model instead of ~320."""
    device = next(model.parameters()).device
    contexts = [group[0][0] for group in groups]
    continuations = [r[1] for group in groups for r in group]
    owner = torch.tensor([g for g, group in enumerate(groups) for _ in group], device=device)
    width, longest = max(map(len, contexts)), max(map(len, continuations))
    x = torch.zeros(len(contexts), width, dtype=torch.long)
    for g, context in enumerate(contexts):
        x[g, width - len(context):] = torch.tensor(context)  # left-padded
    c, weight = model.config, model.transformer.wte.weight
    # A cache of the positions needed, not of the whole context window.
    cache = KVCache(c.n_layer, len(contexts), c.n_head, c.head_size, width + longest - 1,
                    weight.device, weight.dtype,
                    torch.tensor([width - len(ctx) for ctx in contexts], device=device))
    n = len(continuations)
    # Where each choice's predicting features are: its context's last position (row b of
    # `first`), then the choice's own positions (row n + b * (longest - 1) + j of `rest`).
    where = [[b] + [n + b * (longest - 1) + j for j in range(len(cont) - 1)]
             for b, cont in enumerate(continuations)]
    with autocast():
        first = model.features(x.to(device), cache)[:, -1][owner]  # (n, C)
        cache.reorder(owner)
        features = [first]
        if longest > 1:
            y = torch.zeros(n, longest - 1, dtype=torch.long)
            for b, cont in enumerate(continuations):
                y[b, :len(cont) - 1] = torch.tensor(cont[:-1])
            features.append(model.features(y.to(device), cache).reshape(-1, first.size(-1)))
        index = torch.tensor([i for w in where for i in w], device=device)
        logits = model.logits(torch.cat(features)[index])  # (N, V)
    scores = read_scores(logits, continuations)
    out, at = [], 0
    for group in groups:
        out.append(scores[at:at + len(group)])
        at += len(group)
    return out


def load_tasks(names: Sequence[str | Path], limit: int | None = None) -> list[Task]:
    """Tasks by file path or built-in name (`shakespeare`, `shakespeare:speaker`, ...)."""
    from gptscratch.evaluation.builtin_tasks import builtin_tasks, is_builtin

    tasks: list[Task] = []
    for name in names:
        if is_builtin(str(name)):
            tasks += [limited(t, limit) for t in builtin_tasks(str(name))]
        else:
            tasks.append(read_task(name, limit))
    return tasks


def limited(task: Task, limit: int | None) -> Task:
    if limit is None or limit >= len(task.items):
        return task
    return Task(task.name, task.kind, task.items[:limit], task.source, task.format)


def evaluate_tasks(ckpt: ModelSource, tasks: Sequence[str | Path], *, shots: int = 0,
                   limit: int | None = None, batch_size: int = 16, device: str = "auto",
                   dtype: str = "float32", quantize: str = "none",
                   progress: bool = False) -> TaskReport:
    """Score a checkpoint on benchmark tasks (`gptscratch eval --task`).

    Args:
        ckpt: any model source `load_model` takes (a run, a LoRA run, a Hugging Face folder).
        tasks: task files (.jsonl, .json, .csv, .parquet) or built-in task names.
        shots: solved examples before each question, drawn from the task with a fixed seed.
        limit: score only the first `limit` items of each task.
        batch_size: requests (choices) per forward pass.
        quantize: none, or int8 (the Linear weights in int8: `checkpoints.load.load_model`).
        progress: show a progress bar (items/s) on stderr.
    """
    for name, value, low in (("shots", shots, 0), ("batch_size", batch_size, 1),
                             ("limit", 1 if limit is None else limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{name} ({value!r}) must be a whole number >= {low}")
    if not tasks:
        raise UserError("no task given; pass --task FILE (or a built-in task: shakespeare)")
    check_quantize(quantize, device, dtype)
    loaded_tasks = [with_shots(t, shots) for t in load_tasks(tasks, limit)]
    loaded = load_model(ckpt, device, dtype="float32", quantize=quantize)
    precision = choose_precision(dtype, next(loaded.model.parameters()).device,
                                 loaded.model.config.n_embd)
    bar = tqdm(total=sum(len(t.items) for t in loaded_tasks), unit="item",
               disable=True if not progress else None,  # None: shown on a terminal only
               leave=False, bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}, {rate_fmt}]")
    start = time.perf_counter()
    results = []
    for task in loaded_tasks:
        bar.set_description(task.name)
        # The bar counts items; scoring reports choices, a task's items each having several.
        per_choice = len(task.items) / sum(i.choices for i in task.items)

        def advance(n: int, k: float = per_choice) -> None:
            bar.update(n * k)

        results.append(score_task(loaded, task, batch_size=batch_size,
                                  autocast=precision.autocast, progress=advance))
    bar.close()
    seconds = time.perf_counter() - start
    core = math.fsum(r.centered for r in results) / len(results)
    settings = {"ckpt": loaded.description or str(ckpt), "shots": shots, "limit": limit,
                "batch_size": batch_size, "dtype": precision.name,
                "device": str(next(loaded.model.parameters()).device),
                "delimiter": " ", "few_shot_separator": FEW_SHOT_SEPARATOR,
                "shot_seed": SHOT_SEED}
    return TaskReport(results, core, settings, seconds)
