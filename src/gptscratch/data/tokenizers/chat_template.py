"""A chat template: how a conversation becomes the token ids of a model that takes turns.

A template has three turn openings (system, user, assistant) and an end of turn, in one of two
styles, which the `chat_template` setting chooses:

- `tokens` (the default): the markers `<|system|>`, `<|user|>`, `<|assistant|>` and `<|end|>`
  are added to a tokenizer of any kind as special tokens (`ChatTokenizer`): ids after the base
  vocabulary that no text ever encodes to, so a message cannot forge a turn. A conversation is
  `<|user|>question<|end|><|assistant|>answer<|end|>`.
- `text`: no new ids; the turns are plain text that the base tokenizer spells (`TEXT_MARKERS`),
  for a model that must run where no tokens can be added, or to read the turns as text:
  `User:\\nquestion\\n\\n\\nAssistant:\\nanswer\\n\\n\\n`. Each opening is a speaker's heading
  on a line of its own, as in the plays the built-in models learn from; the line break after
  it is a place where byte-level BPE cuts anyway, so GPT-2's tokenizer encodes the whole
  rendered text to the ids `render` gives (for messages that end in a visible character), as
  a tool that runs the Jinja template does. The end of a turn is two blank lines: one blank
  line is common inside a message (paragraphs, Alpaca's instruction and input, the built-in
  questions' passages), and marker characters such as `<|` are missing from a vocabulary
  learned from plays. A message holding `\\n\\n\\n` is a bad row (`message_problem`); a message
  can write an opening, so in this style it can forge a turn.

`ChatTemplate.render` lays a conversation out and marks which ids are training targets (the
assistant's content and the end of its turn: SFT's loss mask); `prompt_ids` ends with the
assistant's opening for the model to answer, and generation stops where the end-of-turn text
appears (`end`, a stop string, not shown). The template is saved in `tokenizer.json`, so it
travels with the prepared data and every checkpoint. For learners:
docs/concepts/chat-fine-tuning.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gptscratch.data.tokenizers.base import Tokenizer
from gptscratch.errors import SettingError, UserError

MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
TEXT_MARKERS = ("System:\n", "User:\n", "Assistant:\n", "\n\n\n")
ROLES = ("system", "user", "assistant")
STYLES = ("tokens", "text")  # the `chat_template` setting's choices (training/config.py)


class Turn(Protocol):
    """What the template reads of a message (`data.conversations.Message`, the server's)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(frozen=True)
class ChatTemplate:
    """A style's markers: the openings of `ROLES`, then the end of a turn. In the `tokens`
    style `markers[i]` is id `first_id + i`; in the `text` style `first_id` is None and the
    markers are encoded as text."""

    style: str
    markers: tuple[str, ...]
    first_id: int | None = None

    @property
    def end(self) -> str:
        """The end-of-turn marker as decoded text (what a stop rule looks for)."""
        return self.markers[len(ROLES)]

    @property
    def end_id(self) -> int | None:
        """The end-of-turn id, where the end is one token (`tokens`); None for `text`."""
        return None if self.first_id is None else self.first_id + len(ROLES)

    def opening_ids(self, tokenizer: Tokenizer, role: str) -> list[int]:
        """The ids that open a turn of `role`."""
        if role not in ROLES:
            raise UserError(f"unknown role '{role}'; roles are {', '.join(ROLES)}")
        i = ROLES.index(role)
        return [self.first_id + i] if self.first_id is not None else tokenizer.encode(
            self.markers[i])

    def end_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The ids that end a turn."""
        return [self.first_id + len(ROLES)] if self.first_id is not None else tokenizer.encode(
            self.end)

    def render(self, tokenizer: Tokenizer, messages: Sequence[Turn]) -> tuple[np.ndarray,
                                                                               np.ndarray]:
        """A conversation's ids and its loss mask. Openings, contents and ends are encoded
        one by one, so a message's text never joins a marker's.

        Returns:
            `(ids, targets)`: int64 ids of shape (N,) and a bool mask of shape (N,), True where
            the id is one the model learns to predict: an assistant message's content and the
            end of its turn. A turn's opening is never a target (the prompt gives it).
        """
        ids: list[int] = []
        targets: list[bool] = []
        end = self.end_ids(tokenizer)
        for message in messages:
            opening = self.opening_ids(tokenizer, message.role)
            body = [*tokenizer.encode(message.content), *end]
            answer = message.role == "assistant"
            ids += [*opening, *body]
            targets += [False] * len(opening) + [answer] * len(body)
        return np.array(ids, dtype=np.int64), np.array(targets, dtype=bool)

    def prompt_ids(self, tokenizer: Tokenizer, messages: Sequence[Turn]) -> list[int]:
        """The ids that ask for the next assistant message: the conversation, then the
        assistant's opening."""
        ids, _ = self.render(tokenizer, messages)
        return [*ids.tolist(), *self.opening_ids(tokenizer, "assistant")]

    def message_problem(self, messages: Sequence[Turn]) -> str | None:
        """What keeps this template from laying `messages` out, or None: in the `text` style,
        a message that holds the end of a turn (it would end its turn there)."""
        if self.style == "tokens":
            return None  # text never encodes to a marker's id
        for i, message in enumerate(messages, 1):
            if self.end in message.content:
                return (f"message {i} ({message.role}) holds {self.end!r}, which ends a turn "
                        "in the text chat template")
        return None

    def jinja(self) -> str:
        """This template in Jinja, as Hugging Face's `apply_chat_template` runs it (its
        `add_generation_prompt` adds the assistant's opening that `prompt_ids` ends with)."""
        system, user, assistant, end = self.markers
        return ("{% for m in messages %}{% if m['role'] == 'system' %}" + system
                + "{% elif m['role'] == 'user' %}" + user + "{% else %}" + assistant
                + "{% endif %}{{ m['content'] }}" + end + "{% endfor %}"
                + "{% if add_generation_prompt %}" + assistant + "{% endif %}")

    def to_dict(self) -> dict[str, Any]:
        if self.first_id is None:
            return {"style": self.style, "markers": list(self.markers)}
        return {"style": self.style, "first_id": self.first_id, "markers": list(self.markers)}

    @classmethod
    def from_dict(cls, d: Any) -> ChatTemplate:
        """Either style's saved form (a UserError for anything else)."""
        style = d.get("style") if isinstance(d, dict) else None
        if style == "tokens" and isinstance(d.get("first_id"), int) and \
                d.get("markers") == list(MARKERS):
            return cls("tokens", MARKERS, int(d["first_id"]))
        if style == "text" and d.get("markers") == list(TEXT_MARKERS) and "first_id" not in d:
            return TEXT_TEMPLATE
        raise UserError(f"a saved chat template is damaged or from a newer gptscratch "
                        f"({str(d)[:80]}); prepare the data again")


TEXT_TEMPLATE = ChatTemplate("text", TEXT_MARKERS)


class ChatTokenizer(Tokenizer):
    """A tokenizer with a chat template. Text encodes exactly as with the base (a marker
    written in a message stays text). In the `tokens` style the markers' ids follow the
    base's, and decode to the markers; in the `text` style the ids are the base's alone."""

    def __init__(self, base: Tokenizer, template: ChatTemplate) -> None:
        if template.first_id is not None and template.first_id != base.vocab_size:
            raise UserError(f"a chat template starting at id {template.first_id} does not fit a "
                            f"vocabulary of {base.vocab_size}; prepare the data again")
        if template.first_id is None:
            missing = _unspellable(base, "".join(template.markers))
            if missing:
                raise SettingError(
                    "chat_template", template.style, "writes its turns with characters this "
                    f"{base.kind} vocabulary lacks ({', '.join(map(repr, missing))})", "tokens")
        self.base, self.chat_template = base, template
        self.kind = base.kind

    @property
    def vocab_size(self) -> int:
        added = len(self.chat_template.markers) if self.chat_template.first_id is not None else 0
        return self.base.vocab_size + added

    @property
    def eot_id(self) -> int | None:
        return self.base.eot_id

    def encode_array(self, text: str) -> np.ndarray:
        return self.base.encode_array(text)

    def decode(self, ids: Sequence[int]) -> str:
        first, markers = self.chat_template.first_id, self.chat_template.markers
        if first is None:
            return self.base.decode(ids)
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if i >= first:
                out.append(self.base.decode(run))
                out.append(markers[i - first] if i - first < len(markers) else "")
                run = []
            else:
                run.append(i)
        return "".join(out) + self.base.decode(run)

    def to_dict(self) -> dict[str, Any]:
        return {**self.base.to_dict(), "chat_template": self.chat_template.to_dict()}


def _unspellable(tokenizer: Tokenizer, text: str) -> list[str]:
    """The characters of `text` that `tokenizer` cannot encode and decode back, in order."""
    missing = []
    for char in dict.fromkeys(text):
        try:
            spelt = tokenizer.decode(tokenizer.encode(char)) == char
        except UserError:
            spelt = False
        if not spelt:
            missing.append(char)
    return missing


def check_chat_style(style: str) -> None:
    """A SettingError unless `style` is one of `STYLES`."""
    if style not in STYLES:
        raise SettingError("chat_template", style, f"must be one of {', '.join(STYLES)}",
                           "tokens")


def chat_template_of(tokenizer: Tokenizer) -> ChatTemplate | None:
    """The tokenizer's chat template, or None for a base model's."""
    return tokenizer.chat_template if isinstance(tokenizer, ChatTokenizer) else None


def with_chat_template(tokenizer: Tokenizer, style: str = "tokens") -> ChatTokenizer:
    """`tokenizer` with a chat template of `style` (itself if it has that one already).

    Raises:
        SettingError: an unknown style; a tokenizer with the other style (a model fine-tuned,
            or data prepared, with it), which it keeps; a `text` style that a char vocabulary
            cannot spell.
    """
    check_chat_style(style)
    if isinstance(tokenizer, ChatTokenizer):
        have = tokenizer.chat_template.style
        if have != style:
            raise SettingError("chat_template", style, f"differs from the {have} chat template "
                               "of this model or data, which it keeps", have)
        return tokenizer
    template = ChatTemplate("tokens", MARKERS, tokenizer.vocab_size) if style == "tokens" \
        else TEXT_TEMPLATE
    return ChatTokenizer(tokenizer, template)
