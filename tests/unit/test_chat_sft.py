"""Chat fine-tuning's pieces: the chat template in both styles (markers as special ids, or
turns as plain text; the loss mask; the refusals), best fit packing (a conversation is never
cut) and the masked loss (a prompt token's target does not count, an answer token's does)."""

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
    GPT2Tokenizer,
    chat_template_of,
    tokenizer_from_dict,
    with_chat_template,
)
from gptscratch.data.tokenizers.chat_template import MARKERS, STYLES, TEXT_MARKERS
from gptscratch.errors import SettingError, UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.settings import rules
from gptscratch.training.config import FinetuneConfig

BASE = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ?<|>", eot=True)
CHAT = with_chat_template(BASE)
TEXT_BASE = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ?:\nSUA", eot=True)
TEXT_CHAT = with_chat_template(TEXT_BASE, "text")
CONVERSATION = [Message("system", "be brief"), Message("user", "who?"),
                Message("assistant", "me"), Message("user", "why?"),
                Message("assistant", "so")]


def test_the_markers_are_ids_after_the_base_vocabulary() -> None:
    template = chat_template_of(CHAT)
    assert template is not None and chat_template_of(BASE) is None
    assert CHAT.vocab_size == BASE.vocab_size + 4
    assert [template.opening_ids(CHAT, r) for r in ("system", "user", "assistant")] == [
        [BASE.vocab_size], [BASE.vocab_size + 1], [BASE.vocab_size + 2]]
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


def test_the_text_style_lays_turns_out_as_text_with_the_answers_as_targets() -> None:
    template = chat_template_of(TEXT_CHAT)
    assert template is not None and template.style == "text" and template.end_id is None
    assert TEXT_CHAT.vocab_size == TEXT_BASE.vocab_size  # no new ids
    ids, targets = template.render(TEXT_CHAT, CONVERSATION)
    assert TEXT_CHAT.decode(ids.tolist()) == TEXT_BASE.decode(ids.tolist()) == (
        "System:\nbe brief\n\n\nUser:\nwho?\n\n\nAssistant:\nme\n\n\n"
        "User:\nwhy?\n\n\nAssistant:\nso\n\n\n")
    assert TEXT_CHAT.decode(ids[targets].tolist()) == "me\n\n\nso\n\n\n"  # no opening
    prompt = template.prompt_ids(TEXT_CHAT, CONVERSATION[:2])
    assert TEXT_CHAT.decode(prompt) == "System:\nbe brief\n\n\nUser:\nwho?\n\n\nAssistant:\n"
    assert TEXT_CHAT.encode("".join(TEXT_MARKERS)) == TEXT_BASE.encode("".join(TEXT_MARKERS))


def test_the_text_style_gives_the_ids_of_the_whole_text_with_gpt2() -> None:
    """The docstring's promise: a tool that encodes the rendered text whole (as one running
    the Jinja template does) gets the ids `render` and `prompt_ids` give."""
    gpt2 = with_chat_template(GPT2Tokenizer(), "text")
    template = chat_template_of(gpt2)
    assert template is not None
    conversation = [*CONVERSATION, Message("user", "And you? Say more, 2 words.")]
    ids, targets = template.render(gpt2, conversation)
    text = gpt2.decode(ids.tolist())
    assert ids.tolist() == gpt2.encode(text)
    assert gpt2.decode(ids[targets].tolist()) == "me\n\n\nso\n\n\n"
    prompt = template.prompt_ids(gpt2, conversation)
    assert prompt == gpt2.encode(text + "Assistant:\n")


def test_the_text_style_travels_in_the_tokenizer_dict_and_keeps_old_files() -> None:
    again = tokenizer_from_dict(TEXT_CHAT.to_dict())
    assert isinstance(again, ChatTokenizer) and again.fingerprint() == TEXT_CHAT.fingerprint()
    assert TEXT_CHAT.to_dict()["chat_template"] == {"style": "text",
                                                   "markers": list(TEXT_MARKERS)}
    assert len({TEXT_CHAT.fingerprint(), TEXT_BASE.fingerprint(),
                with_chat_template(TEXT_BASE).fingerprint()}) == 3
    # A tokens-style file as gptscratch has always written it still loads.
    old = {**BASE.to_dict(), "chat_template": {"style": "tokens", "first_id": BASE.vocab_size,
                                               "markers": list(MARKERS)}}
    assert tokenizer_from_dict(old).fingerprint() == CHAT.fingerprint()
    for damaged in ({"style": "text", "markers": ["User: "]}, {"style": "emoji"},
                    {"style": "text", "markers": list(TEXT_MARKERS), "first_id": 3}, "text"):
        with pytest.raises(UserError, match="chat template is damaged or from a newer "
                                            "gptscratch") as error:
            tokenizer_from_dict({**TEXT_BASE.to_dict(), "chat_template": damaged})
        assert "\n" not in str(error.value)


def test_a_tokenizer_refuses_a_chat_template_it_cannot_take() -> None:
    with pytest.raises(SettingError) as error:
        with_chat_template(BASE, "text")  # no capitals, colon or line break
    said = error.value.render("--chat-template")
    assert said == ("chat_template ('text') writes its turns with characters this char "
                    "vocabulary lacks ('S', ':', '\\n', 'U', 'A'); try --chat-template tokens")
    with pytest.raises(SettingError) as error:
        with_chat_template(TEXT_CHAT, "tokens")
    assert error.value.render("--chat-template") == (
        "chat_template ('tokens') differs from the text chat template of this model or data, "
        "which it keeps; try --chat-template text")
    with pytest.raises(SettingError, match="differs from the tokens chat template"):
        with_chat_template(CHAT, "text")
    with pytest.raises(SettingError, match="must be one of tokens, text"):
        with_chat_template(BASE, "emoji")
    assert with_chat_template(TEXT_CHAT, "text") is TEXT_CHAT
    assert rules(FinetuneConfig)["chat_template"].choices == STYLES  # one list of styles


def test_the_text_style_finds_a_message_that_would_end_its_turn() -> None:
    template = chat_template_of(TEXT_CHAT)
    tokens = chat_template_of(CHAT)
    assert template is not None and tokens is not None
    bad = [Message("user", "who?"), Message("assistant", "me\n\n\nand you")]
    assert template.message_problem(bad) == (
        "message 2 (assistant) holds '\\n\\n\\n', which ends a turn in the text chat template")
    assert template.message_problem(CONVERSATION) is None
    assert tokens.message_problem(bad) is None  # text never becomes a marker's id


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
            change: tuple[int, int] | None = None, tok: ChatTokenizer = CHAT) -> PackedRows:
    """`conversations` packed in memory; `change=(conversation, position)` bumps one id."""
    template = chat_template_of(tok)
    assert template is not None
    rendered = [template.render(tok, c) for c in conversations]
    ids = np.concatenate([r[0] for r in rendered])
    lengths = np.array([len(r[0]) for r in rendered])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if change is not None:
        at = starts[change[0]] + change[1]
        ids[at] = (ids[at] + 1) % tok.base.vocab_size
    rows, _ = best_fit(lengths, width)
    return PackedRows(ids, np.concatenate([r[1] for r in rendered]).astype(np.uint8),  # type: ignore[arg-type]
                      starts, lengths, np.array([c for r in rows for c in r]),
                      np.cumsum([0, *map(len, rows)]), width, template.end_id or 0, all_tokens)


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


def test_the_text_style_loss_counts_answer_targets_only() -> None:
    template = chat_template_of(TEXT_CHAT)
    assert template is not None
    convs = [CONVERSATION, [Message("user", "hi"), Message("assistant", "yes sir")]]
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=TEXT_CHAT.vocab_size, block_size=127, n_layer=1,
                            n_head=2, n_embd=16))
    base = _packed(convs, 128, tok=TEXT_CHAT)
    x, y = base.batch(np.arange(len(base)))
    end = len(TEXT_MARKERS[3])
    assert (y != IGNORE).sum() == len("me") + len("so") + len("yes sir") + 3 * end
    loss = lm_loss(model(x), y)
    # A char tokenizer: a position in the text is a position in the ids.
    text = TEXT_CHAT.decode(template.render(TEXT_CHAT, CONVERSATION)[0].tolist())
    answer = text.index("Assistant:\nme") + len("Assistant:\n")
    for position, counts in ((text.index("brief"), False), (text.index("who?"), False),
                             (answer - 1, False),  # the opening's line break
                             (answer + 1, True),  # the "e" of "me"
                             (answer + 2, True)):  # the end of its turn
        _, changed = _packed(convs, 128, change=(0, position),
                             tok=TEXT_CHAT).batch(np.arange(len(base)))
        assert (lm_loss(model(x), changed) != loss) == counts, position
