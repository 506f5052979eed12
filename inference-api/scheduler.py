"""Rows, waiting prompts and the prefill budget: what runs in the next step."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from .sequence import Sequence

# A decoding row costs a step about as much as this many prompt tokens: its own weights' share
# plus attention over its cache and its sampling (measured at 32 rows: ~1.3 ms against ~0.55 ms
# per prompt token). A row that is not decoding leaves that much room for prompt tokens.
DECODE_ROW_COST = 2


@dataclass
class PromptChunk:
    """Prompt tokens [start, start + length) of one sequence to prefill this step."""

    seq: Sequence
    start: int
    length: int

    @property
    def completes_prompt(self) -> bool:
        """True when this chunk holds the prompt's last token, whose logits give the first token."""
        return self.start + self.length == self.seq.num_prompt


@dataclass
class StepPlan:
    """One step: a token for each decoding row and prompt chunks within the budget."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[PromptChunk] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    """Admits waiting prompts into free rows (first come, first served) and plans each step."""

    def __init__(self, max_rows: int, prefill_budget: int):
        self.max_rows = max_rows
        self.prefill_budget = prefill_budget
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # row -> sequence
        self.free_rows = list(range(max_rows - 1, -1, -1))  # pop() hands out row 0 first

    @property
    def busy_rows(self) -> int:
        """Rows holding a request."""
        return len(self.running)

    def has_work(self) -> bool:
        """True when a step would do something."""
        return bool(self.running or self.waiting)

    def add(self, seq: Sequence) -> None:
        """Queue a new prompt for a row."""
        self.waiting.append(seq)

    def remove(self, session_id: str) -> Sequence | None:
        """Take a sequence out, waiting or running, freeing its row; None if unknown."""
        for seq in self.waiting:
            if seq.session_id == session_id:
                self.waiting.remove(seq)
                return seq
        for row, seq in self.running.items():
            if seq.session_id == session_id:
                self.release(seq)
                return seq
        return None

    def release(self, seq: Sequence) -> None:
        """Free the row of a finished sequence for the next step."""
        if seq.row is not None and self.running.get(seq.row) is seq:
            del self.running[seq.row]
            self.free_rows.append(seq.row)

    def advance(self, plan: StepPlan, sampled: list[tuple[Sequence, int]]) -> None:
        """After a step's forward: what it put in the cache, and each row's new token."""
        for seq in plan.decode:
            seq.num_cached += 1
        for chunk in plan.prefill:
            chunk.seq.num_cached += chunk.length
        for seq, token in sampled:
            seq.generated.append(token)

    def drain(self) -> list[Sequence]:
        """Remove and return every sequence (after a failed step)."""
        seqs = list(self.running.values()) + list(self.waiting)
        for seq in list(self.running.values()):
            self.release(seq)
        self.waiting.clear()
        return seqs

    def admit(self) -> list[Sequence]:
        """Move waiting prompts into free rows; returns the newly admitted ones."""
        admitted = []
        now = time.monotonic()
        while self.waiting and self.free_rows:
            seq = self.waiting.popleft()
            seq.row = self.free_rows.pop()
            seq.admitted_at = now
            seq.num_cached = 0
            self.running[seq.row] = seq
            admitted.append(seq)
        return admitted

    def plan(self) -> StepPlan:
        """Decode every row past its prompt; share the prefill budget among prompts, oldest first.

        Prompt tokens also take the place of rows that are not decoding, DECODE_ROW_COST each:
        a step costs about as much as a full one whatever its mix, the running streams never
        wait for more than that, yet prompts go in faster while few rows decode.
        """
        plan = StepPlan()
        prefilling = []
        for seq in self.running.values():
            (prefilling if seq.prefilling else plan.decode).append(seq)
        budget = self.prefill_budget + DECODE_ROW_COST * (self.max_rows - len(plan.decode))
        for seq in sorted(prefilling, key=lambda s: s.admitted_at):
            if budget <= 0:
                break
            length = min(budget, seq.num_prompt - seq.num_cached)
            plan.prefill.append(PromptChunk(seq, seq.num_cached, length))
            budget -= length
        return plan
