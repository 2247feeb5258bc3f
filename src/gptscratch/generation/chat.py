"""A conversation with a model, turn by turn: what `gptscratch chat` keeps between prompts.

A model with a chat template (fine-tuned with `train --sft`) holds a conversation: each line
is a user message, the model's answer ends at its end-of-turn marker, and the messages so far
(after an optional system message) are the next turn's context. A base model has no turns:
without `you`, each line is a prompt of its own (with `config.speaker`, the continuation is
that character's speech). With `you` and `config.speaker`, the session plays a scene: your
line becomes your character's speech, the model answers as its character and stops where the
next speaker would begin, and the whole dialogue so far is the next turn's context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.data.conversations import Message
from gptscratch.data.tokenizers import chat_template_of
from gptscratch.errors import UserError
from gptscratch.generation.config import GenerationConfig
from gptscratch.generation.script import add_speech, corpus_script, resolve_speaker, speaker_prompt
from gptscratch.generation.stream import stream_chunks


def check_scene(config: GenerationConfig, you: str | None) -> None:
    """A scene needs both characters: yours (`you`) and the model's (`config.speaker`)."""
    if you is not None and config.speaker is None:
        raise UserError("--you needs --speaker: the character the model plays")


class ChatSession:
    """The state of a chat: the model, the settings and (in a scene) the dialogue so far. Turn
    t is seeded with `config.seed + t` (given a seed): reproducible, yet turns differ."""

    def __init__(self, loaded: LoadedModel, config: GenerationConfig,
                 you: str | None = None, system: str | None = None) -> None:
        check_scene(config, you)
        self.template = chat_template_of(loaded.tokenizer)
        if self.template is None and system is not None:
            raise UserError("a system message needs a model with a chat template; fine-tune "
                            "one with `gptscratch train --sft --init-from RUN`")
        if self.template is not None and (you is not None or config.speaker is not None):
            raise UserError("this model takes turns with its chat template; drop --you and "
                            "--speaker (they play scenes with a base model)")
        self.system = [Message("system", system)] if system else []
        self.messages = list(self.system)
        self.you = you
        config = dataclasses.replace(config, num_samples=1)  # one answer per turn
        if you is not None:  # a scene: each answer ends where the next speaker would begin
            config = dataclasses.replace(config, until_next_speaker=True)
        # Found once: every turn's generation uses the same speakers.
        self.script = corpus_script(loaded.checkpoint) if config.needs_script else None
        self.loaded, self.config = loaded, config
        self.speaker: str | None = None
        self.style = "line"
        if config.speaker is not None:
            self.speaker, self.style = resolve_speaker(config.speaker, self.script)
        self.transcript = ""
        self.turn = 0

    @property
    def heading(self) -> str:
        """What precedes each answer: the model's character's heading, if it plays one."""
        return speaker_prompt("", self.speaker, self.style) if self.speaker else ""

    @property
    def separator(self) -> str:
        """What follows each answer: a blank line between the speeches of a scene."""
        return "\n\n" if self.you is not None else "\n"

    def reset(self) -> None:
        """Forget the dialogue so far (a system message stays)."""
        self.transcript = ""
        self.messages = list(self.system)

    def reply(self, line: str) -> Iterator[str]:
        """The model's answer to `line`, piece by piece as it is generated."""
        if self.template is not None:
            yield from self._answer(line)
            return
        prompt = (add_speech(self.transcript, self.you, line, self.style)
                  if self.you is not None else line)
        seed = None if self.config.seed is None else self.config.seed + self.turn
        self.turn += 1
        generation = stream_chunks(self.loaded, prompt,
                                   dataclasses.replace(self.config, seed=seed), self.script)
        answer = []
        for chunk in generation:
            answer.append(chunk.text)
            yield chunk.text
        if self.you is not None:
            self.transcript = generation.prompts[0] + "".join(answer).strip() + "\n"

    def _answer(self, line: str) -> Iterator[str]:
        """A turn of a chat-template conversation: the answer to the user message `line`."""
        assert self.template is not None
        messages = [*self.messages, Message("user", line)]
        ids = self.template.prompt_ids(self.loaded.tokenizer, messages)
        seed = None if self.config.seed is None else self.config.seed + self.turn
        self.turn += 1
        answer = []
        for chunk in stream_chunks(self.loaded, line, dataclasses.replace(self.config, seed=seed),
                                   prompt_ids=[ids]):
            answer.append(chunk.text)
            yield chunk.text
        self.messages = [*messages, Message("assistant", "".join(answer).strip() or " ")]
