"""Prefix reuse: keep each row's cache after its request, and start new prompts where one ends.

Rows are fixed, so the cache needs no blocks: a row's positions [0, n) hold the keys and values
of the n tokens it last saw. A new prompt takes the free row whose tokens share the longest start
with it and skips prefilling that part (llama.cpp's approach). When a busy row shares more, as
when the same document or system prompt comes in twice at once, its positions are copied into
the new row, once the busy row has them in its cache: a copy costs microseconds per token where
the forward costs a millisecond or more, so the new prompt waits for that rather than computing
the same positions beside it. Keys and values at a position depend only on the tokens up to it,
so the answer is the same either way.

Keys and values depend on the LoRA adapter a row ran with too (its products change every
layer's), so a prompt only reuses rows, kept or busy, of its own adapter (or, without one, rows
that had none).
"""
from __future__ import annotations

from dataclasses import dataclass

from .sequence import Sequence

# A copy from another row is planned only when it saves at least this many prompt tokens over
# what the taken row already holds: below it the copy's fixed cost is as large as the saving.
MIN_COPY_TOKENS = 8


@dataclass
class Reuse:
    """How a newly admitted prompt starts: its row, and cached positions it need not prefill."""

    row: int
    cached: int  # positions [0, cached) of the row hold the prompt's first tokens already
    copy_from: Sequence | None = None  # a busy sequence whose row has, or will have, more
    copy_length: int = 0  # positions to copy from its row once they are in its cache


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common start of two token lists (slices compare in C)."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] and a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


class RowContents:
    """The tokens whose keys and values each row holds, busy rows and free rows alike."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.kept: dict[int, list[int]] = {}  # free row -> tokens its cache still holds
        self.kept_adapter: dict[int, str | None] = {}  # free row -> the adapter they ran with

    def keep(self, seq: Sequence) -> None:
        """A sequence leaves its row: remember what the row's cache holds."""
        if self.enabled and seq.row is not None:
            self.kept[seq.row] = (seq.prompt_ids + seq.generated)[:seq.num_cached]
            self.kept_adapter[seq.row] = seq.adapter

    def forget_all(self) -> None:
        """No row's cache can be trusted any more (a step failed halfway)."""
        self.kept.clear()
        self.kept_adapter.clear()

    def choose(self, prompt: list[int], free_rows: list[int],
               running: dict[int, Sequence], adapter: str | None = None) -> Reuse:
        """The free row for a prompt run with `adapter`, and how much of the prompt is cached
        for it (by rows of the same adapter alone).

        free_rows is ordered oldest-freed first: with nothing to reuse the row whose contents
        have been kept longest goes, so recent prompts stay available longest. At least the
        prompt's last token is always prefilled: its logits give the first new token.
        """
        limit = len(prompt) - 1
        if not self.enabled or limit <= 0:
            return Reuse(free_rows[0], 0)
        in_place = {row: min(shared_prefix(prompt, self.kept.get(row, [])), limit)
                    if self.kept_adapter.get(row) == adapter else 0 for row in free_rows}
        row = max(free_rows, key=in_place.__getitem__)  # ties: the oldest freed
        best = Reuse(row, in_place[row])
        most = best.cached + MIN_COPY_TOKENS - 1
        for seq in running.values():
            if seq.adapter != adapter:
                continue
            # What its row holds or will hold: the prompt and the answer but its newest token.
            shared = min(shared_prefix(prompt, seq.prompt_ids + seq.generated[:-1]), limit)
            if shared > most:
                best.copy_from, best.copy_length, most = seq, shared, shared
        return best

    def taken(self, row: int) -> None:
        """A row was given to a new prompt: its contents are the new sequence's from now on."""
        self.kept.pop(row, None)
        self.kept_adapter.pop(row, None)

