"""Chat messages as a play script: how a base model trained on plays holds a conversation.

A gptscratch model has seen play scripts, not chat transcripts, so the conversation becomes a
scene in the training corpus's layout (script mode, `generation.script`), and the model writes
the next speech:

    <system and developer messages, as a prologue>

    USER:
    <the user's message>

    ASSISTANT:
                                        <- the model continues here

A message's `name` is the character who speaks it (a Shakespeare model can play ROMEO
answering JULIET). The answer ends where the next speaker's heading begins.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptscratch.data.conversations import Message
from gptscratch.data.tokenizers import ChatTemplate, Tokenizer
from gptscratch.errors import UserError
from gptscratch.generation.script import NextSpeakerStop, ScriptFormat, add_speech, speaker_prompt
from gptscratch.server.errors import APIError
from gptscratch.server.schemas import ChatMessage, unknown_characters

USER, ASSISTANT = "USER", "ASSISTANT"


def _speaker(message: ChatMessage, script: ScriptFormat | None) -> str:
    default = ASSISTANT if message.role == "assistant" else USER
    name = (message.name or default).strip()
    if not name or ":" in name or "\n" in name:
        raise APIError(400, f"a message's name ({message.name!r}) must be a speaker name "
                            "without colons or line breaks", "messages")
    return (script.resolve(name) if script is not None else None) or name


def render_chat(messages: Sequence[ChatMessage], script: ScriptFormat | None,
                assistant: str | None = None) -> tuple[str, str]:
    """The prompt a conversation (oldest message first) becomes, and the character the model
    speaks as: `assistant`, else the last assistant message's name, else ASSISTANT. `script`
    None means the "line" layout.

    Raises:
        APIError: no user or assistant message, or a name that cannot head a speech.
    """
    style = script.style if script is not None else "line"
    prologue = [m.text.strip() for m in messages if m.role in ("system", "developer")]
    speeches = [m for m in messages if m.role in ("user", "assistant")]
    if not speeches:
        raise APIError(400, "messages needs at least one user message", "messages")
    transcript = "\n".join(p for p in prologue if p)
    transcript = transcript + "\n" if transcript else ""
    for message in speeches:
        transcript = add_speech(transcript, _speaker(message, script), message.text, style)
    answers = [m for m in speeches if m.role == "assistant"]
    if assistant is None:
        assistant = _speaker(answers[-1], script) if answers else ASSISTANT
    return speaker_prompt(transcript, assistant, style), assistant


def template_prompt(messages: Sequence[ChatMessage], tokenizer: Tokenizer,
                    template: ChatTemplate) -> list[int]:
    """The ids that ask a model fine-tuned with a chat template (`train --sft`) to answer:
    the messages through its template (`developer` is `system`), then the assistant's
    opening (`<|assistant|>`, or `Assistant:` and a line break in the text style).

    Raises:
        APIError: no user message, or characters the tokenizer cannot encode.
    """
    if not any(m.role == "user" for m in messages):
        raise APIError(400, "messages needs at least one user message", "messages")
    turns = [Message("system" if m.role == "developer" else m.role, m.text) for m in messages]
    try:
        return template.prompt_ids(tokenizer, turns)
    except UserError as e:
        raise unknown_characters(e, "messages") from None


def next_speaker_stop(script: ScriptFormat | None) -> NextSpeakerStop:
    """The rule that ends the model's speech where another character's begins."""
    return NextSpeakerStop(script)
