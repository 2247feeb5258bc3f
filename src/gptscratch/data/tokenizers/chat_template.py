"""A chat template: how a conversation becomes the token ids of a model that takes turns.

Four turn markers, `<|system|>`, `<|user|>`, `<|assistant|>` and `<|end|>`, are added to a
tokenizer of any kind as special tokens (`ChatTokenizer`): ids after the base vocabulary that
no text ever encodes to, so a message cannot forge a turn. `ChatTemplate.render` lays a
conversation out as `<|user|>question<|end|><|assistant|>answer<|end|>` and marks which ids
are training targets (the assistant's tokens and its `<|end|>`: SFT's loss mask);
`prompt_ids` ends with `<|assistant|>` for the model to answer, and generation stops at
`<|end|>`. The template is saved in `tokenizer.json`, so it travels with the prepared data and
every checkpoint. For learners: docs/concepts/chat-fine-tuning.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gptscratch.data.tokenizers.base import Tokenizer
from gptscratch.errors import UserError

MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
ROLES = ("system", "user", "assistant")


class Turn(Protocol):
    """What the template reads of a message (`data.conversations.Message`, the server's)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(frozen=True)
class ChatTemplate:
    """The markers and their ids: `MARKERS[i]` is id `first_id + i`."""

    first_id: int
    markers: tuple[str, ...] = MARKERS

    @property
    def end_id(self) -> int:
        """The end-of-turn id: where an answer stops."""
        return self.first_id + len(ROLES)

    @property
    def end(self) -> str:
        """The end-of-turn marker as decoded text (what a stop rule looks for)."""
        return self.markers[len(ROLES)]

    def role_id(self, role: str) -> int:
        if role not in ROLES:
            raise UserError(f"unknown role '{role}'; roles are {', '.join(ROLES)}")
        return self.first_id + ROLES.index(role)

    def render(self, tokenizer: Tokenizer, messages: Sequence[Turn]) -> tuple[np.ndarray,
                                                                               np.ndarray]:
        """A conversation's ids and its loss mask.

        Returns:
            `(ids, targets)`: int64 ids of shape (N,) and a bool mask of shape (N,), True where
            the id is one the model learns to predict: an assistant message's content and the
            `<|end|>` after it. A turn's opening marker is never a target (the prompt gives it).
        """
        ids: list[int] = []
        targets: list[bool] = []
        for message in messages:
            body = [*tokenizer.encode(message.content), self.end_id]
            answer = message.role == "assistant"
            ids += [self.role_id(message.role), *body]
            targets += [False] + [answer] * len(body)
        return np.array(ids, dtype=np.int64), np.array(targets, dtype=bool)

    def prompt_ids(self, tokenizer: Tokenizer, messages: Sequence[Turn]) -> list[int]:
        """The ids that ask for the next assistant message: the conversation, then
        `<|assistant|>`."""
        ids, _ = self.render(tokenizer, messages)
        return [*ids.tolist(), self.role_id("assistant")]

    def jinja(self) -> str:
        """This template in Jinja, as Hugging Face's `apply_chat_template` runs it (its
        `add_generation_prompt` adds the `<|assistant|>` that `prompt_ids` ends with)."""
        system, user, assistant, end = self.markers
        return ("{% for m in messages %}{% if m['role'] == 'system' %}" + system
                + "{% elif m['role'] == 'user' %}" + user + "{% else %}" + assistant
                + "{% endif %}{{ m['content'] }}" + end + "{% endfor %}"
                + "{% if add_generation_prompt %}" + assistant + "{% endif %}")

    def to_dict(self) -> dict[str, Any]:
        return {"style": "tokens", "first_id": self.first_id, "markers": list(self.markers)}

    @classmethod
    def from_dict(cls, d: Any) -> ChatTemplate:
        ok = (isinstance(d, dict) and d.get("style") == "tokens"
              and isinstance(d.get("first_id"), int) and d.get("markers") == list(MARKERS))
        if not ok:
            raise UserError(f"a saved chat template is damaged or from a newer gptscratch "
                            f"({str(d)[:80]}); prepare the data again")
        return cls(int(d["first_id"]), tuple(d["markers"]))


class ChatTokenizer(Tokenizer):
    """A tokenizer with a chat template: the base's ids, then one id per marker. Text encodes
    exactly as with the base (a marker written in a message stays text); ids decode to the
    base's text with each marker id spelt as its marker."""

    def __init__(self, base: Tokenizer, template: ChatTemplate) -> None:
        if template.first_id != base.vocab_size:
            raise UserError(f"a chat template starting at id {template.first_id} does not fit a "
                            f"vocabulary of {base.vocab_size}; prepare the data again")
        self.base, self.chat_template = base, template
        self.kind = base.kind

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.chat_template.markers)

    @property
    def eot_id(self) -> int | None:
        return self.base.eot_id

    def encode_array(self, text: str) -> np.ndarray:
        return self.base.encode_array(text)

    def decode(self, ids: Sequence[int]) -> str:
        first, markers = self.chat_template.first_id, self.chat_template.markers
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


def chat_template_of(tokenizer: Tokenizer) -> ChatTemplate | None:
    """The tokenizer's chat template, or None for a base model's."""
    return tokenizer.chat_template if isinstance(tokenizer, ChatTokenizer) else None


def with_chat_template(tokenizer: Tokenizer) -> ChatTokenizer:
    """`tokenizer` with the chat markers added after its vocabulary (itself if it has them)."""
    if isinstance(tokenizer, ChatTokenizer):
        return tokenizer
    return ChatTokenizer(tokenizer, ChatTemplate(first_id=tokenizer.vocab_size))
