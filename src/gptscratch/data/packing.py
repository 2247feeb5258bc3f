"""Conversations packed into training rows: how chat fine-tuning (SFT) fills a context.

A row holds `block_size + 1` ids: whole conversations, placed by best fit (longest first, each
into the row with the least room that still takes it, as nanochat's SFT loader does), then
padding. A conversation is never cut, so no trained answer loses its question; one longer than
a row is dropped (counted in the log) or, with `strict`, refused. `get_batch` draws rows at
random; a target is -1 (ignored by the loss) unless it is a training target: the assistant's
tokens (`ChatTemplate.render`'s mask), or with `train_on="all"` every conversation token.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

import numpy as np
import torch

from gptscratch.data.token_files import PreparedData, TokenSplit
from gptscratch.data.tokenizers import chat_template_of
from gptscratch.errors import UserError

log = logging.getLogger("gptscratch.train")

IGNORE = -1  # a target the loss skips (`model.gpt.lm_loss`)
TRAIN_ON = ("answers", "all")


def best_fit(lengths: np.ndarray, width: int) -> tuple[list[list[int]], list[int]]:
    """Pack items of `lengths` into bins of `width` by best fit decreasing.

    Returns:
        `(rows, dropped)`: each row's item indices (in placement order; rows in the order they
        were opened) and the indices of items longer than `width`. Deterministic: ties go to
        the lower index and the earliest-opened row.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    # Rows by room left: `rooms` is the sorted list of distinct rooms, `by_room[r]` the rows
    # with room r (oldest first). At most `width` distinct rooms, so bisect stays cheap.
    rooms: list[int] = []
    by_room: dict[int, list[int]] = {}
    dropped = []
    for i in order:
        n = int(lengths[i])
        if n > width:
            dropped.append(i)
            continue
        at = bisect.bisect_left(rooms, n)
        if at < len(rooms):
            room = rooms[at]
            row = by_room[room].pop(0)
            if not by_room[room]:
                del by_room[room], rooms[at]
        else:
            room, row = width, len(rows)
            rows.append([])
        rows[row].append(i)
        left = room - n
        if left > 0:
            if left not in by_room:
                bisect.insort(rooms, left)
                by_room[left] = []
            by_room[left].append(row)
    return rows, sorted(dropped)


@dataclass
class PackedRows:
    """One split's conversations as rows of `width` ids (`block_size + 1`): row r is the
    conversations `order[bounds[r]:bounds[r + 1]]`, each `lengths[c]` ids from `starts[c]`."""

    ids: TokenSplit
    targets: TokenSplit
    starts: np.ndarray  # (C,) int64: where each conversation's ids begin
    lengths: np.ndarray  # (C,) int64
    order: np.ndarray  # conversation indices, row by row
    bounds: np.ndarray  # (R + 1,) int64
    width: int
    pad_id: int
    train_on_all: bool = False

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Row r's ids, int64 (width,), and targets, int64 (width,) with -1 where no loss is
        taken (the padding; the prompts too, unless `train_on_all`)."""
        convs = self.order[self.bounds[r]:self.bounds[r + 1]]
        where = np.concatenate([np.arange(self.starts[c], self.starts[c] + self.lengths[c])
                                for c in convs])
        ids = np.full(self.width, self.pad_id, dtype=np.int64)
        targets = np.full(self.width, IGNORE, dtype=np.int64)
        ids[:len(where)] = self.ids[where]
        keep = np.ones(len(where), bool) if self.train_on_all else self.targets[where] == 1
        targets[:len(where)] = np.where(keep, ids[:len(where)], IGNORE)
        return ids, targets

    def first_prompt(self) -> list[int]:
        """The first conversation that fits a row, up to its first answer: a question as the
        model is asked it (the chat template's layout, through the assistant's opening)."""
        c = int(self.order.min())
        span = slice(int(self.starts[c]), int(self.starts[c] + self.lengths[c]))
        ids, answer = np.asarray(self.ids[span]), np.asarray(self.targets[span]) == 1
        end = int(answer.argmax()) if answer.any() else len(ids)
        return [int(i) for i in ids[:end]]

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x, y)` of the given rows, int64 (B, T): `y[b, t]` is `x[b, t + 1]` where it is a
        training target, else -1."""
        pairs = [self.row(int(r)) for r in rows]
        ids = torch.from_numpy(np.stack([p[0] for p in pairs]))  # (B, T+1)
        targets = torch.from_numpy(np.stack([p[1] for p in pairs]))  # (B, T+1)
        return ids[:, :-1].contiguous(), targets[:, 1:].contiguous()


def pack_split(data: PreparedData, split: str, block_size: int, train_on: str = "answers",
               strict: bool = False) -> PackedRows:
    """Pack a prepared split of conversations into rows of `block_size + 1` ids.

    Raises:
        UserError: `train_on` is not one of TRAIN_ON; with `strict`, a conversation is longer
            than a row; or no conversation fits a row.
    """
    if train_on not in TRAIN_ON:
        raise UserError(f"train_on ({train_on!r}) must be one of {', '.join(TRAIN_ON)}")
    lengths = np.asarray(data.chat_part(split, "lengths"), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    width = block_size + 1
    rows, dropped = best_fit(lengths, width)
    if dropped:
        longest = int(lengths[dropped].max())
        what = (f"{len(dropped):,} of the {len(lengths):,} {split} conversations are longer "
                f"than the context of {width} ids (block_size + 1; the longest has {longest})")
        if strict or not rows:
            raise UserError(f"{what}; use a block_size of at least {longest - 1} or shorter "
                            "conversations" + ("" if strict else " (none would be left)"))
        log.warning("%s: they are left out (strict refuses them instead)", what)
    order = np.array([c for row in rows for c in row], dtype=np.int64)
    bounds = np.cumsum([0, *map(len, rows)]).astype(np.int64)
    template = chat_template_of(data.tokenizer)
    if template is None:
        raise UserError(f"'{data.dir}' holds conversations but its tokenizer has no chat "
                        "template; it is damaged: prepare the conversations again")
    # Padding comes last in a row and is never a target, so no real token sees it: any id
    # does (the end-of-turn id where there is one).
    pad = template.end_id if template.end_id is not None else 0
    return PackedRows(data.tokens(split), data.chat_part(split, "targets"), starts, lengths,
                      order, bounds, width, pad, train_on == "all")
