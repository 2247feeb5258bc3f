"""Prepare conversations for chat fine-tuning (SFT): the chat counterpart of `prepare`.

Conversations (files in any of `conversations.py`'s formats, a Hugging Face dataset's
`messages` column, or the built-in Shakespeare questions) are rendered by the tokenizer's chat
template (`ChatTemplate.render`, which adds the template, of the style asked for, where the
tokenizer has none; a conversation it cannot lay out is a bad row) and written as a prepared
folder (`token_files`): the ids as for text, plus each id's target flag
(the loss mask) and each conversation's length, which `packing.py` packs into rows of the
model's context when training starts. A conversation goes to validation by
`is_val_document`, as a document does.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptscratch.data.conversations import (
    BadRows,
    Conversation,
    dataset_conversations,
    note_bad_row,
    read_conversations,
    to_conversation,
)
from gptscratch.data.prepare import is_val_document, reusable_prepared
from gptscratch.data.sources import find_files
from gptscratch.data.sources.files import file_fingerprint
from gptscratch.data.token_files import (
    CHAT_PARTS,
    FORMAT_VERSION,
    SHARD_TOKENS,
    PreparedData,
    ShardWriter,
    check_output_folder,
    default_prepared_dir,
    remove_token_files,
    start_writing,
    token_dtype,
    write_meta,
)
from gptscratch.data.tokenizers import (
    CharTokenizer,
    ChatTemplate,
    Tokenizer,
    build_tokenizer,
    chat_template_of,
    parse_tokenizer_spec,
    with_chat_template,
)
from gptscratch.data.tokenizers.chat_template import TEXT_MARKERS, check_chat_style
from gptscratch.errors import UserError
from gptscratch.files import remove_leftovers, sha256_bytes

logger = logging.getLogger(__name__)

BUILTIN_QUESTIONS = "shakespeare-questions"


@dataclass(frozen=True)
class ConversationSource:
    """Where conversations come from: a description, a fingerprint (what makes a prepared
    folder reusable) and a fresh stream of them on each call."""

    description: str
    fingerprint: Any
    stream: Callable[[BadRows], Iterator[Conversation]]


def open_conversations(source: str, *, hf_dataset: str | None = None, hf_split: str = "train",
                       hf_column: str = "messages", hf_data_files: list[str] | None = None,
                       skip_bad_rows: bool = False) -> ConversationSource:
    """Find the conversations `source` names: `shakespeare-questions` (the built-in training
    questions), conversation files (a file, a folder or a glob), or with `hf_dataset` a
    dataset's `hf_column` of OpenAI-style message lists."""
    if hf_dataset:
        return ConversationSource(
            f"dataset '{hf_dataset}' ({hf_split})", [hf_dataset, hf_split, hf_column,
                                                     hf_data_files],
            lambda bad: dataset_conversations(hf_dataset, hf_split, hf_column,
                                              data_files=hf_data_files,
                                              skip_bad_rows=skip_bad_rows, bad=bad))
    if source == BUILTIN_QUESTIONS:
        from gptscratch.data.shakespeare_questions import question_conversations

        def builtin(bad: BadRows) -> Iterator[Conversation]:
            for i, record in enumerate(question_conversations("train")):
                yield to_conversation(record, f"{BUILTIN_QUESTIONS}:{i + 1}")
        return ConversationSource("the built-in Shakespeare questions (train)",
                                  [BUILTIN_QUESTIONS, 1], builtin)
    files, what = find_files(source)

    def from_files(bad: BadRows) -> Iterator[Conversation]:
        yield from read_conversations(files, skip_bad_rows=skip_bad_rows, bad=bad)[0]
    return ConversationSource(what, [file_fingerprint(p) for p in files], from_files)


def prepare_chat(source: str, tokenizer: str | Tokenizer = "char",
                 out_dir: Path | str | None = None, *, val_fraction: float = 0.1,
                 hf_dataset: str | None = None, hf_split: str = "train",
                 hf_column: str = "messages", hf_data_files: list[str] | None = None,
                 skip_bad_rows: bool = False, force: bool = False, replace: bool = True,
                 shard_tokens: int = SHARD_TOKENS, chat_template: str = "tokens") -> PreparedData:
    """Render conversations into `out_dir` and open it, or reuse it if prepared the same way.

    Args:
        source: what `open_conversations` reads.
        tokenizer: `char`, `gpt2`, `bpe:N` (learned from the messages), or a tokenizer as it is
            (a fine-tuned model's own); the chat markers are added to it where it has none.
        val_fraction: the share of conversations held out for the validation loss.
        skip_bad_rows: skip malformed conversations (counted in the log) instead of stopping.
        chat_template: the template's style: `tokens` (markers as new ids) or `text` (turns
            as plain text); a learned char vocabulary includes the text markers' characters.

    Raises:
        UserError: a bad row (file:line and what is wrong), no conversations, an empty split,
            or an output folder that is not ours to write. SettingError: a `chat_template`
            the given tokenizer cannot take (it has the other, or cannot spell `text`).
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction ({val_fraction}) must be between 0 and 1 "
                        "(exclusive); try 0.1")
    given = None if isinstance(tokenizer, str) else tokenizer
    spec = tokenizer if isinstance(tokenizer, str) else tokenizer.kind
    parse_tokenizer_spec(spec)  # fail before reading anything
    check_chat_style(chat_template)
    if given is not None:
        with_chat_template(given, chat_template)  # the style it has, spelt by its vocabulary
    style = "" if chat_template == "tokens" else f"-{chat_template}"
    out = Path(out_dir) if out_dir is not None else default_prepared_dir(
        source, f"chat{style}-{spec}", hf_dataset)
    check_output_folder(out)
    started = time.perf_counter()
    src = open_conversations(source, hf_dataset=hf_dataset, hf_split=hf_split,
                             hf_column=hf_column, hf_data_files=hf_data_files,
                             skip_bad_rows=skip_bad_rows)
    options: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "content": "conversations",
        "source_fingerprint": src.fingerprint, "tokenizer": spec,
        "val_fraction": val_fraction, "skip_bad_rows": skip_bad_rows,
        # Absent for tokens, so folders prepared before the setting existed are reused.
        **({"chat_template": chat_template} if chat_template != "tokens" else {})}
    if given is not None:
        options["tokenizer_fingerprint"] = given.fingerprint()
    key = sha256_bytes(json.dumps(options, sort_keys=True).encode("utf-8"))
    existing = reusable_prepared(out, key, replace, force)
    if existing is not None:
        return existing
    spelling = "".join(TEXT_MARKERS) if chat_template == "text" else ""
    tok = with_chat_template(given or _learn_tokenizer(spec, src, spelling), chat_template)
    meta = _write_folder(out, tok, src, {**options, "prepare_key": key}, shard_tokens)
    logger.info("prepared %s: %s train + %s val conversations (%s + %s tokens, %s of them "
                "trained on) in %.1f s", out, f"{meta['train_documents']:,}",
                f"{meta['val_documents']:,}", f"{meta['train_tokens']:,}",
                f"{meta['val_tokens']:,}", f"{meta['train_targets']:,}",
                time.perf_counter() - started)
    return PreparedData(dir=out, meta=meta, tokenizer=tok)


def chat_prepare_options(options: dict[str, Any]) -> dict[str, Any]:
    """What of `prepare`'s options `prepare_chat` takes: the split, the dataset and
    `skip_bad_rows` (a dataset's column is `messages` unless another text column is named)."""
    column = options.get("text_column", "text")
    return {k: v for k, v in {
        "val_fraction": options.get("val_fraction"), "hf_dataset": options.get("hf_dataset"),
        "hf_split": options.get("hf_split"), "hf_data_files": options.get("hf_data_files"),
        "hf_column": "messages" if column == "text" else column,
        "skip_bad_rows": options.get("skip_bad_rows")}.items() if v is not None}


def _learn_tokenizer(spec: str, src: ConversationSource, spelling: str = "") -> Tokenizer:
    """A char vocabulary or BPE merges learned from every message's text, and `spelling` (the
    text chat template's markers, which the tokenizer must spell)."""
    if spec == "gpt2":
        return build_tokenizer(spec)
    texts = itertools.chain((m.content for c in src.stream(BadRows()) for m in c.messages),
                            [spelling] if spelling else [])
    if spec == "char":  # an end-of-text id, as for a corpus of many documents
        return CharTokenizer.from_text(texts, eot=True)
    return build_tokenizer(spec, texts)


def _write_folder(out: Path, tok: Tokenizer, src: ConversationSource, options: dict[str, Any],
                  shard_tokens: int) -> dict[str, Any]:
    """Write every split's ids, masks and lengths, the tokenizer, then `meta.json`; a failure
    removes what this call wrote."""
    made = None
    if not out.exists():
        made = out
        while not made.parent.exists():
            made = made.parent
    start_writing(out)
    remove_leftovers(out)
    try:
        counts = _write_shards(out, tok, src, options["val_fraction"], shard_tokens,
                               options["skip_bad_rows"])
        meta: dict[str, Any] = {
            **options, "tokenizer_kind": tok.kind, "tokenizer_fingerprint": tok.fingerprint(),
            "vocab_size": tok.vocab_size, "eot_id": tok.eot_id,
            "chat_template": chat_template_of(tok).to_dict(),  # type: ignore[union-attr]
            "dtype": token_dtype(tok.vocab_size).name, **counts, "source": src.description}
        write_meta(out, tok, meta)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        else:
            remove_token_files(out)
        raise
    return meta


def _write_shards(out: Path, tok: Tokenizer, src: ConversationSource, val_fraction: float,
                  shard_tokens: int, skip_bad_rows: bool) -> dict[str, Any]:
    template = chat_template_of(tok)
    assert template is not None
    dtype = token_dtype(tok.vocab_size)
    counts = {f"{split}_{what}": 0 for split in ("train", "val")
              for what in ("bytes", "documents", "targets")}
    bad = BadRows()
    with ShardWriter(out, "train", dtype, shard_tokens) as train_ids, \
            ShardWriter(out, "val", dtype, shard_tokens) as val_ids, \
            ShardWriter(out, "train_targets", CHAT_PARTS["targets"], shard_tokens) as train_t, \
            ShardWriter(out, "val_targets", CHAT_PARTS["targets"], shard_tokens) as val_t, \
            ShardWriter(out, "train_lengths", CHAT_PARTS["lengths"], shard_tokens) as train_n, \
            ShardWriter(out, "val_lengths", CHAT_PARTS["lengths"], shard_tokens) as val_n:
        writers = {"train": (train_ids, train_t, train_n), "val": (val_ids, val_t, val_n)}
        conversations = _laid_out(src.stream(bad), template, skip_bad_rows, bad)
        for number, conversation in zip(itertools.count(), conversations):
            split = "val" if is_val_document(number, val_fraction) else "train"
            ids, targets = template.render(tok, conversation.messages)
            ids_w, targets_w, lengths_w = writers[split]
            ids_w.write(ids)
            targets_w.write(targets.astype(np.uint8))
            lengths_w.write(np.array([len(ids)], dtype=np.uint32))
            counts[f"{split}_documents"] += 1
            counts[f"{split}_targets"] += int(targets.sum())
            counts[f"{split}_bytes"] += sum(len(m.content.encode("utf-8"))
                                            for m in conversation.messages)
    if bad.count:
        logger.warning("skipped %d bad conversation%s (skip_bad_rows); the first: %s",
                       bad.count, "s" if bad.count != 1 else "", bad.first)
    if counts["train_documents"] == 0 or counts["val_documents"] == 0:
        found = counts["train_documents"] + counts["val_documents"]
        raise UserError(f"{src.description} gave {found} conversation(s): too few for a "
                        "training and a validation split; give more conversations")
    shards = {name: w.shards for name, w in (
        ("train", train_ids), ("val", val_ids), ("train_targets", train_t),
        ("val_targets", val_t), ("train_lengths", train_n), ("val_lengths", val_n))}
    return {**counts, "train_tokens": train_ids.tokens, "val_tokens": val_ids.tokens,
            "shards": shards, "skipped_rows": bad.count}


def _laid_out(conversations: Iterator[Conversation], template: ChatTemplate,
              skip_bad_rows: bool, bad: BadRows) -> Iterator[Conversation]:
    """The conversations `template` can lay out; any other (in the text style, a message that
    holds the end of a turn) is a bad row, refused or skipped as the reader's are."""
    for conversation in conversations:
        problem = template.message_problem(conversation.messages)
        if problem is None:
            yield conversation
        else:
            note_bad_row(f"{conversation.where}: {problem}", skip_bad_rows, bad)
