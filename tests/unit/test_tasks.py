"""Scoring benchmark tasks: every task type against an oracle computed by hand from a plain
forward pass (the sum of the continuation's token log-probabilities), batched scoring equal to
one request at a time, lm-evaluation-harness's encoding of a context and its continuation,
few-shot prompts, the metrics, and the built-in tasks made from the held-out plays."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptscratch.errors import UserError
from gptscratch.evaluation.task_files import (
    LANGUAGE_MODELING,
    MULTIPLE_CHOICE,
    SCHEMA,
    Item,
    Task,
)
from gptscratch.evaluation.tasks import (
    ChoiceScore,
    choice_scores,
    encode_request,
    score_requests,
    score_shared_contexts,
    score_task,
    shares_context,
    task_result,
    with_shots,
)
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT

pytestmark = pytest.mark.unit

LETTERS = "abcdefghijklmnopqrstuvwxyz ,.?!\n"


def tiny(block_size: int = 24, **kwargs: object) -> LoadedModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(LETTERS) + 1, block_size=block_size, n_layer=2,
                         n_head=2, n_embd=32, **kwargs)  # type: ignore[arg-type]
    model = GPT(config)
    with torch.no_grad():  # wider random logits than the init's: choices differ clearly
        model.lm_head.weight.mul_(20)
    return LoadedModel(model.eval(), CharTokenizer(sorted(LETTERS), eot=True))


def oracle(loaded: LoadedModel, context: str, continuation: str) -> ChoiceScore:
    """The continuation's summed log-probability and greediness, from one plain forward."""
    tok = loaded.tokenizer
    ids = tok.encode(context + continuation)[-(loaded.model.config.block_size + 1):]
    n = len(tok.encode(continuation))
    with torch.no_grad():
        logp = F.log_softmax(loaded.model(torch.tensor([ids[:-1]]))[0].float(), -1)
    targets = torch.tensor(ids[1:])
    chosen = logp.gather(1, targets[:, None])[:, 0][-n:]
    greedy = bool((logp.argmax(-1) == targets)[-n:].all())
    return ChoiceScore(float(chosen.sum()), n, greedy)


def test_each_choice_scores_as_the_oracle_says() -> None:
    loaded = tiny()
    pairs = [("the cat sat on", " the mat"), ("a", " b"), ("hello there, how", " are you?"),
             # longer than the context (24): the context is cropped from the left
             ("once upon a time there was a very long sentence about", " nothing")]
    requests = [encode_request(loaded.tokenizer, c, k) for c, k in pairs]
    got = score_requests(loaded.model, requests, batch_size=3)
    for (context, continuation), score in zip(pairs, got, strict=True):
        expected = oracle(loaded, context, continuation)
        assert score.tokens == expected.tokens
        assert score.logprob == pytest.approx(expected.logprob, abs=1e-4)
        assert score.greedy == expected.greedy


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_batched_equals_one_by_one(positions: str) -> None:
    loaded = tiny(positions=positions)
    rng = random.Random(0)
    requests = [([rng.randrange(33) for _ in range(rng.randint(1, 30))],
                 [rng.randrange(33) for _ in range(rng.randint(1, 6))]) for _ in range(23)]
    alone = [score_requests(loaded.model, [r], batch_size=1)[0] for r in requests]
    for batch_size in (4, 23):
        batched = score_requests(loaded.model, requests, batch_size=batch_size)
        for a, b in zip(alone, batched, strict=True):
            assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
            assert (b.tokens, b.greedy) == (a.tokens, a.greedy)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_a_shared_context_scores_as_each_choice_alone(positions: str) -> None:
    loaded = tiny(positions=positions)
    requests = [([3, 1, 4, 1, 5, 9, 2], cont) for cont in ([6], [5, 3, 5], [8, 9, 7, 9, 3], [2, 3])]
    assert shares_context(requests, 24)
    assert not shares_context(requests, 10)  # 7 + 5 - 1 positions do not fit in 10
    assert not shares_context([requests[0], ([1, 2], [3])], 24)
    other = [([7, 7], cont) for cont in ([1, 2, 3, 4, 5, 6], [8])]  # a shorter context
    single = [([5], [6, 7])]  # one choice, a one-token context
    groups = score_shared_contexts(loaded.model, [requests, other, single])
    assert [len(g) for g in groups] == [4, 2, 1]
    for group, got in zip([requests, other, single], groups, strict=True):
        alone = [score_requests(loaded.model, [r], batch_size=1)[0] for r in group]
        for a, b in zip(alone, got, strict=True):
            assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
            assert (b.tokens, b.greedy) == (a.tokens, a.greedy)


def test_questions_share_a_pass_only_when_they_fit_the_context_together() -> None:
    """Each fits the 24-token context alone; a long context and a long choice together do not,
    so they go to separate passes, and both still score as alone."""
    loaded = tiny()
    long_context = Task("t", MULTIPLE_CHOICE, (
        Item(("the cat sat on it",) * 2, ("ran", "sat"), 0, "a"),  # 17 + 4 - 1 positions
        Item(("a",) * 2, ("dog ran far from it", "cat sat"), 1, "b")), "f", "x")  # 1 + 20 - 1
    got = choice_scores(loaded, long_context, batch_size=16)
    for item, scores in zip(long_context.items, got, strict=True):
        for context, continuation, score in zip(item.contexts, item.continuations, scores,
                                                strict=True):
            expected = oracle(loaded, context, " " + continuation)
            assert score.logprob == pytest.approx(expected.logprob, abs=1e-4)


def test_greedy_is_true_exactly_when_every_token_is_the_argmax() -> None:
    loaded = tiny()
    ids = loaded.tokenizer.encode("the")
    with torch.no_grad():
        for _ in range(3):  # the model's own greedy continuation
            ids.append(int(loaded.model(torch.tensor([ids]))[0, -1].argmax()))
    greedy_text = loaded.tokenizer.decode(ids[3:])
    wrong = greedy_text[:-1] + ("a" if greedy_text[-1] != "a" else "b")
    scores = score_requests(loaded.model, [([*loaded.tokenizer.encode("the")],
                                            loaded.tokenizer.encode(k))
                                           for k in (greedy_text, wrong)])
    assert [s.greedy for s in scores] == [True, False]


def test_requests_are_encoded_as_lm_eval_encodes_them() -> None:
    gpt2 = GPT2Tokenizer()
    # The context's trailing space moves to the continuation, where BPE joins it to the word.
    context_ids, continuation_ids = encode_request(gpt2, "The cat sat on the ", "mat")
    assert gpt2.decode(context_ids) == "The cat sat on the"
    assert continuation_ids == gpt2.encode(" mat")
    # An empty context is the end-of-text token.
    assert encode_request(gpt2, "", "Hello") == ([50256], gpt2.encode("Hello"))
    with pytest.raises(UserError, match="empty context"):
        encode_request(CharTokenizer(list("ab")), "", "a")


def test_task_types_give_the_oracles_answers() -> None:
    loaded = tiny()
    items = {
        MULTIPLE_CHOICE: [Item(("the cat",) * 3, ("sat", "ran far", "is."), 1, "f:1"),
                          Item(("a b",) * 2, ("c", "d"), 0, "f:2")],
        SCHEMA: [Item(("the cat", "a dog", "hi"), ("ran.",) * 3, 2, "f:1")],
        LANGUAGE_MODELING: [Item(("hello",), ("world",), 0, "f:1")],
    }
    for kind, task_items in items.items():
        result = score_task(loaded, Task("t", kind, tuple(task_items), "f", kind))
        right = right_norm = 0
        for item in task_items:
            scores = [oracle(loaded, c, " " + k) for c, k in zip(item.contexts,
                                                                 item.continuations, strict=True)]
            if kind == LANGUAGE_MODELING:
                right += scores[0].greedy
                right_norm += scores[0].greedy
                continue
            sums = [s.logprob for s in scores]
            norms = [s.logprob / len(k) for s, k in zip(scores, item.continuations, strict=True)]
            right += sums.index(max(sums)) == item.gold
            right_norm += norms.index(max(norms)) == item.gold
        assert result.accuracy == right / len(task_items)
        assert result.accuracy_norm == right_norm / len(task_items)


def test_metrics_length_normalisation_and_centering() -> None:
    task = Task("t", MULTIPLE_CHOICE, (
        Item(("q",) * 2, ("a", "bbbbbbb"), 1, ""),  # the long right choice: -7 < -2 in sum,
        Item(("q",) * 4, ("a", "b", "c", "d"), 0, "")), "f", "x")  # but better per character
    scores = [[ChoiceScore(-2.0, 1, False), ChoiceScore(-7.0, 7, False)],
              [ChoiceScore(-1.0, 1, True)] + [ChoiceScore(-3.0, 1, False)] * 3]
    result = task_result(task, scores)
    assert result.accuracy == 0.5 and result.accuracy_norm == 1.0
    assert result.chance == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert result.centered == pytest.approx((1.0 - result.chance) / (1 - result.chance))
    lm = Task("l", LANGUAGE_MODELING, (Item(("x",), ("y",), 0, ""),) * 4, "f", "x")
    greedy = [[ChoiceScore(-1.0, 1, g)] for g in (True, False, False, True)]
    assert task_result(lm, greedy).centered == 0.5 and task_result(lm, greedy).chance == 0.0


def test_shots_are_other_items_drawn_with_a_fixed_seed() -> None:
    items = tuple(Item((f"q{i}",) * 2, ("yes", "no"), i % 2, "") for i in range(6))
    task = Task("t", MULTIPLE_CHOICE, items, "f", "x")
    shot = with_shots(task, 2)
    assert shot.items == with_shots(task, 2).items  # the same every time
    for i, item in enumerate(shot.items):
        examples = item.contexts[0].split("\n\n")
        assert len(examples) == 3 and examples[-1] == f"q{i}"
        assert all(e in {f"q{j} {'yes' if j % 2 == 0 else 'no'}" for j in range(6) if j != i}
                   for e in examples[:2])
        assert item.contexts[0] == item.contexts[1] and item.continuations == ("yes", "no")
    with pytest.raises(UserError, match="--shots 6 needs more than 6 items"):
        with_shots(task, 6)


def test_an_item_the_tokenizer_cannot_encode_is_named() -> None:
    loaded = tiny()
    task = Task("t", MULTIPLE_CHOICE, (Item(("QQ",) * 2, ("a", "b"), 0, "t.jsonl:7"),),
                "f", "x")
    with pytest.raises(UserError, match=r"^t\.jsonl:7: text has characters outside"):
        score_task(loaded, task)


def test_the_builtin_tasks_come_from_the_held_out_plays(shared_cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(shared_cache))
    from gptscratch.data.shakespeare import shakespeare_text
    from gptscratch.data.sources import line_cut
    from gptscratch.evaluation.builtin_tasks import ITEMS, builtin_tasks

    text = shakespeare_text()
    held_out = text[line_cut(text, 0.1):]
    tasks = builtin_tasks("shakespeare")
    assert [t.name for t in tasks] == ["shakespeare:next-line", "shakespeare:speaker",
                                      "shakespeare:last-word"]
    assert [t.kind for t in tasks] == [MULTIPLE_CHOICE, SCHEMA, LANGUAGE_MODELING]
    for task in tasks:
        assert len(task.items) == ITEMS
        for item in task.items[:20]:
            gold = item.gold_text()
            if task.kind != SCHEMA:  # a schema's name is put before a line it does not head
                assert gold[-60:] in held_out
    assert builtin_tasks("shakespeare:speaker")[0].items == tasks[1].items  # fixed seed
    golds = [i.gold for i in tasks[0].items]
    assert all(golds.count(g) > ITEMS / 8 for g in range(4))  # the right answer moves about
    with pytest.raises(UserError, match="no built-in task 'shakespeare:nope'; the built-in"):
        builtin_tasks("shakespeare:nope")


def test_centered_accuracy_of_a_perfect_score_is_one() -> None:
    task = Task("t", SCHEMA, (Item(("a", "b"), ("c", "c"), 0, ""),), "f", "x")
    result = task_result(task, [[ChoiceScore(-1.0, 1, True), ChoiceScore(-5.0, 1, False)]])
    assert result.centered == 1.0 and math.isclose(result.chance, 0.5)


@pytest.mark.parametrize(("generated", "answer", "same"), [
    (" 42", "6 * 7 = 42\n#### 42", True),
    (" It is 1,000.", "It is 1000", True),
    (" $5\nQuestion: next", "5", True),
    (" Paris", "paris.", True),
    (" 41", "#### 42", False),
    ("", "42", False),
])
def test_final_answers_compare_what_matters(generated: str, answer: str, same: bool) -> None:
    from gptscratch.evaluation.tasks import final_answer

    assert (final_answer(generated) == final_answer(answer)) is same


def test_a_generative_item_is_right_when_greedy_decoding_gives_its_answer() -> None:
    from gptscratch.evaluation.task_files import GENERATIVE
    from gptscratch.generation.config import GenerationConfig
    from gptscratch.generation.stream import complete

    loaded = tiny(block_size=64)
    prompts = ["the cat?\nsaid", "a dog.\nsaid"]  # the tiny vocabulary: no capitals or colons
    config = GenerationConfig(max_new_tokens=64, temperature=0.0, stop=("\n\n",))
    said = [c.text for c in complete(loaded, prompts, config)]
    items = (Item((prompts[0],), (said[0],), 0, ""), Item((prompts[1],), ("x" + said[1],), 0, ""))
    result = score_task(loaded, Task("qa", GENERATIVE, items, "f", "question / answer"),
                        batch_size=1)
    assert result.accuracy == 0.5 and result.chance == 0.0 and result.centered == 0.5


NATIVE_ROWS = {
    "core multiple choice": {"query": "The cat sat on the", "choices": ["mat", "moon"], "gold": 0},
    "core schema": {"context_options": ["The glass fell and", "The pillow fell and"],
                    "continuation": "it broke.", "gold": 0},
    "core language modelling": {"context": "One plus one is", "continuation": "two"},
    "hellaswag": {"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he",
                  "ctx": "", "endings": ["fries it [title] well.", "eats the pan."], "label": 0},
    "arc": {"question": "Which is a metal?", "answerKey": "B",
            "choices": {"text": ["wood", "iron"], "label": ["A", "B"]}},
    "piqa": {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "bake it", "label": 0},
    "winogrande": {"sentence": "The cup fell off the shelf because _ was wobbly.",
                   "option1": "the cup", "option2": "the shelf", "answer": "2"},
    "mmlu": {"question": "2 + 2 =", "choices": ["3", "4", "5", "6"], "answer": 1},
    "lambada": {"text": "He opened the door and saw his dog"},
}


@pytest.mark.parametrize("fmt", list(NATIVE_ROWS))
def test_every_format_scores_as_the_oracle_says(fmt: str, tmp_path: Path) -> None:
    """A row of each format, read from a file and scored, against the sum of log-probabilities
    of its rendered texts from a plain forward pass (GPT-2's tokenizer, a tiny random model)."""
    import json

    from gptscratch.evaluation.task_files import read_task

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50257, block_size=64, n_layer=1, n_head=2, n_embd=16))
    loaded = LoadedModel(model.eval(), GPT2Tokenizer())
    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps(NATIVE_ROWS[fmt]) + "\n", encoding="utf-8")
    task = read_task(path)
    assert task.format == fmt
    result = score_task(loaded, task)
    (got,) = choice_scores(loaded, task)
    (item,) = task.items
    tok = loaded.tokenizer
    scores = []
    for context, continuation in zip(item.contexts, item.continuations, strict=True):
        context_ids, cont_ids = encode_request(tok, context, item.delimiter + continuation)
        assert tok.decode(context_ids + cont_ids) == context + item.delimiter + continuation
        ids = context_ids + cont_ids
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([ids[:-1]]))[0], -1)
        targets = torch.tensor(ids[1:])
        scores.append((float(logp.gather(1, targets[:, None])[-len(cont_ids):].sum()),
                       bool((logp.argmax(-1) == targets)[-len(cont_ids):].all())))
    assert [g.logprob for g in got] == pytest.approx([s[0] for s in scores], abs=1e-4)
    assert [g.greedy for g in got] == [s[1] for s in scores]
    if task.kind == LANGUAGE_MODELING:
        assert result.accuracy == float(scores[0][1])
    else:
        best = max(range(len(scores)), key=lambda i: scores[i][0])
        assert result.accuracy == float(best == item.gold)
        norms = [s[0] / len(c) for s, c in zip(scores, item.continuations, strict=True)]
        if task.kind == MULTIPLE_CHOICE:
            assert result.accuracy_norm == float(norms.index(max(norms)) == item.gold)
