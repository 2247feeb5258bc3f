"""Chat messages rendered as a play script (`server.chat_template`): the layout of the
corpus, the speakers' names, and the conversations it refuses; and, for a model fine-tuned
with a chat template, the messages through it (the text style's turns as text)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from gptscratch.data.tokenizers import (  # noqa: E402
    CharTokenizer,
    chat_template_of,
    with_chat_template,
)
from gptscratch.generation.script import ScriptFormat  # noqa: E402
from gptscratch.server.chat_template import render_chat, template_prompt  # noqa: E402
from gptscratch.server.errors import APIError  # noqa: E402
from gptscratch.server.schemas import ChatMessage  # noqa: E402


def messages(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=text) for role, text in pairs]  # type: ignore


def test_a_conversation_becomes_a_scene_in_the_line_layout() -> None:
    prompt, speaker = render_chat(
        [ChatMessage(role="system", content="A room."),
         ChatMessage(role="user", content=" Hello. ", name="JULIET"),
         ChatMessage(role="assistant", content="Hi.", name="romeo"),
         ChatMessage(role="user", content=[{"type": "text", "text": "Again."}],  # type: ignore
                     name="JULIET")],
        ScriptFormat("line", {"ROMEO": 3, "JULIET": 2}))
    assert speaker == "ROMEO"  # the corpus's spelling of the last answer's speaker
    assert prompt == "A room.\n\nJULIET:\nHello.\n\nROMEO:\nHi.\n\nJULIET:\nAgain.\n\nROMEO:\n"


def test_default_speakers_and_the_inline_layout() -> None:
    prompt, speaker = render_chat(messages(("user", "Hi"), ("assistant", "Yes?"),
                                           ("user", "Well")),
                                  ScriptFormat("inline", {"A": 2, "B": 2}))
    assert speaker == "ASSISTANT"
    assert prompt == "USER: Hi\nASSISTANT: Yes?\nUSER: Well\nASSISTANT: "


@pytest.mark.parametrize("chat", [
    messages(("system", "Only a prologue.")),
    [ChatMessage(role="user", content="Hi", name="A: B")],
])
def test_conversations_that_cannot_be_a_scene(chat: list[ChatMessage]) -> None:
    with pytest.raises(APIError) as caught:
        render_chat(chat, None)
    assert caught.value.status == 400 and caught.value.param == "messages"


def test_a_text_template_model_reads_the_messages_as_text_turns() -> None:
    tok = with_chat_template(CharTokenizer.from_text("System:\nUser:\nAssistant:\n bfhi?"),
                             "text")
    template = chat_template_of(tok)
    assert template is not None
    ids = template_prompt(messages(("developer", "be brief"), ("user", "hi?")), tok, template)
    assert tok.decode(ids) == "System:\nbe brief\n\n\nUser:\nhi?\n\n\nAssistant:\n"
    with pytest.raises(APIError) as caught:
        template_prompt(messages(("user", "hi!")), tok, template)  # "!" is not in the vocabulary
    assert caught.value.status == 400 and caught.value.param == "messages"
