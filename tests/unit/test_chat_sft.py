"""Chat fine-tuning's pieces: the chat template (markers as special ids, the loss mask), best
fit packing (a conversation is never cut) and the masked loss (a prompt token's target does
not count, an answer token's does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptscratch.data.conversations import Message
from gptscratch.data.packing import IGNORE, PackedRows, best_fit
from gptscratch.data.tokenizers import (
    CharTokenizer,
    ChatTokenizer,
    chat_template_of,
    tokenizer_from_dict,
    with_chat_template,
)
from gptscratch.data.tokenizers.chat_template import MARKERS
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss

BASE = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ?<|>", eot=True)
CHAT = with_chat_template(BASE)
CONVERSATION = [Message("system", "be brief"), Message("user", "who?"),
                Message("assistant", "me"), Message("user", "why?"),
                Message("assistant", "so")]


def test_the_markers_are_ids_after_the_base_vocabulary() -> None:
    template = chat_template_of(CHAT)
    assert template is not None and chat_template_of(BASE) is None
    assert CHAT.vocab_size == BASE.vocab_size + 4
    assert [template.role_id(r) for r in ("system", "user", "assistant")] == [
        BASE.vocab_size, BASE.vocab_size + 1, BASE.vocab_size + 2]
    assert template.end_id == BASE.vocab_size + 3
    assert CHAT.decode(list(range(BASE.vocab_size, CHAT.vocab_size))) == "".join(MARKERS)
    # A marker written in a message is text: it can never open or end a turn.
    assert CHAT.encode("<|end|>") == BASE.encode("<|end|>")
    assert max(CHAT.encode("<|end|>")) < BASE.vocab_size


def test_a_conversation_renders_with_the_answers_as_its_only_targets() -> None:
    template = chat_template_of(CHAT)
    assert template is not None
    ids, targets = template.render(CHAT, CONVERSATION)
    assert CHAT.decode(ids.tolist()) == ("<|system|>be brief<|end|><|user|>who?<|end|>"
                                        "<|assistant|>me<|end|><|user|>why?<|end|>"
                                        "<|assistant|>so<|end|>")
    trained = "".join(CHAT.decode([int(i)]) for i in ids[targets])
    assert trained == "me<|end|>so<|end|>"  # the answers and their end markers, no opener
    prompt = template.prompt_ids(CHAT, CONVERSATION[:2])
    assert CHAT.decode(prompt) == "<|system|>be brief<|end|><|user|>who?<|end|><|assistant|>"


def test_the_template_travels_in_the_tokenizer_dict() -> None:
    again = tokenizer_from_dict(CHAT.to_dict())
    assert isinstance(again, ChatTokenizer) and again.fingerprint() == CHAT.fingerprint()
    assert again.fingerprint() != BASE.fingerprint()
    assert with_chat_template(CHAT) is CHAT  # markers are added once
    damaged = {**CHAT.to_dict(), "chat_template": {"style": "tokens", "first_id": 3}}
    with pytest.raises(UserError, match="chat template is damaged"):
        tokenizer_from_dict(damaged)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=60), st.integers(8, 40))
def test_best_fit_never_cuts_or_loses_a_conversation(lengths: list[int], width: int) -> None:
    rows, dropped = best_fit(np.array(lengths), width)
    placed = [i for row in rows for i in row]
    assert sorted(placed + dropped) == list(range(len(lengths)))  # each exactly once
    assert dropped == [i for i, n in enumerate(lengths) if n > width]
    assert all(sum(lengths[i] for i in row) <= width for row in rows)
    assert rows == best_fit(np.array(lengths), width)[0]  # deterministic


def test_best_fit_fills_the_tightest_row_first() -> None:
    rows, dropped = best_fit(np.array([6, 5, 4, 3, 2, 11]), 10)
    assert dropped == [5]
    # 4 goes beside 6 (room 4, the tightest that takes it), not beside 5 (room 5); then
    # 3 and 2 fill 5's row: two full rows.
    assert rows == [[0, 2], [1, 3, 4]]


def _packed(conversations: list[list[Message]], width: int, all_tokens: bool = False,
            change: tuple[int, int] | None = None) -> PackedRows:
    """`conversations` packed in memory; `change=(conversation, position)` bumps one id."""
    template = chat_template_of(CHAT)
    assert template is not None
    rendered = [template.render(CHAT, c) for c in conversations]
    ids = np.concatenate([r[0] for r in rendered])
    lengths = np.array([len(r[0]) for r in rendered])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if change is not None:
        at = starts[change[0]] + change[1]
        ids[at] = (ids[at] + 1) % BASE.vocab_size
    rows, _ = best_fit(lengths, width)
    return PackedRows(ids, np.concatenate([r[1] for r in rendered]).astype(np.uint8),  # type: ignore[arg-type]
                      starts, lengths, np.array([c for r in rows for c in r]),
                      np.cumsum([0, *map(len, rows)]), width, template.end_id, all_tokens)


def test_the_loss_counts_answer_targets_only() -> None:
    convs = [CONVERSATION, [Message("user", "hi"), Message("assistant", "yes sir")]]
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=CHAT.vocab_size, block_size=63, n_layer=1, n_head=2,
                            n_embd=16))
    base = _packed(convs, 64)
    x, y = base.batch(np.arange(len(base)))
    assert (y != IGNORE).sum() == len("me") + len("so") + len("yes sir") + 3  # and 3 ends
    loss = lm_loss(model(x), y)
    # Position 1 of conversation 0 is in the system message, 13 in the user's "who?" and 18
    # the "e" of the answer "me": the inputs stay, only the targets come from changed ids.
    for position, counts in ((1, False), (13, False), (18, True)):
        _, changed = _packed(convs, 64, change=(0, position)).batch(np.arange(len(base)))
        assert (lm_loss(model(x), changed) != loss) == counts, position
    _, every = _packed(convs, 64, all_tokens=True).batch(np.arange(len(base)))
    assert (every != IGNORE).sum() > (y != IGNORE).sum()
