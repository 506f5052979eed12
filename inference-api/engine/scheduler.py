"""Rows, waiting prompts and the prefill budget: what runs in the next step."""
from __future__ import annotations

import time
from collections import deque

from .prefix_cache import RowContents
from .sequence import NewToken, Sequence
from .step_budget import StepBudget
from .step_plan import PromptChunk, RowCopy, StepPlan


class Scheduler:
    """Admits waiting prompts into free rows (first come, first served) and plans each step."""

    def __init__(self, max_rows: int, budget: StepBudget, prefix_caching: bool = True):
        self.max_rows = max_rows
        self.budget = budget
        self.contents = RowContents(enabled=prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # row -> sequence
        self.free_rows = list(range(max_rows))  # oldest freed first

    @property
    def busy_rows(self) -> int:
        """Rows holding a request."""
        return len(self.running)

    def has_work(self) -> bool:
        """True when a step would do something."""
        return bool(self.running or self.waiting)

    def accounting_faults(self) -> list[str]:
        """What is wrong with the rows' bookkeeping: empty when every row is in one place, free
        or busy, and only free rows are kept for reuse. A leak would show here first."""
        every, free, busy = set(range(self.max_rows)), set(self.free_rows), set(self.running)
        kept = set(self.contents.kept)
        faults = []
        if len(free) != len(self.free_rows):
            faults.append("a row is listed free twice")
        if free & busy:
            faults.append(f"rows {sorted(free & busy)} are both free and busy")
        if every - free - busy:
            faults.append(f"rows {sorted(every - free - busy)} are neither free nor busy")
        if kept - free:
            faults.append(f"rows {sorted(kept - free)} are kept for reuse but not free")
        if any(seq.row != row for row, seq in self.running.items()):
            faults.append("a running sequence is filed under another row")
        return faults

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
        """Free the row of a finished sequence for the next step; its cache stays for reuse."""
        if seq.row is not None and self.running.get(seq.row) is seq:
            self.contents.keep(seq)
            del self.running[seq.row]
            self.free_rows.append(seq.row)

    def advance(self, plan: StepPlan, sampled: list[NewToken]) -> None:
        """After a step's forward: what it put in the cache, and each row's new token."""
        for seq in plan.decode:
            seq.num_cached += 1
        for chunk in plan.prefill:
            chunk.seq.num_cached += chunk.length
        for new in sampled:
            new.seq.generated.extend(new.closing or (new.token,))

    def drain(self) -> list[Sequence]:
        """Remove and return every sequence (after a failed step)."""
        seqs = list(self.running.values()) + list(self.waiting)
        for seq in list(self.running.values()):
            self.release(seq)
        self.contents.forget_all()  # the failed step may have written some layers, not others
        self.waiting.clear()
        return seqs

    def admit(self) -> list[Sequence]:
        """Move waiting prompts into free rows, each where most of it is cached; returns them.

        A sequence whose start another busy row has, or is prefilling, gets copy_from set: plan()
        copies it once that row has it in its cache, and the sequence waits until then.
        """
        admitted = []
        now = time.monotonic()
        while self.waiting and self.free_rows:
            seq = self.waiting.popleft()
            # A prompt whose own log probabilities are asked for is computed whole.
            prompt = seq.prompt_ids[:1] if seq.wants_prompt_logprobs else seq.prompt_ids
            reuse = self.contents.choose(prompt, self.free_rows, self.running, seq.adapter)
            self.free_rows.remove(reuse.row)
            self.contents.taken(reuse.row)
            seq.row, seq.admitted_at = reuse.row, now
            seq.copy_from, seq.copy_length = reuse.copy_from, reuse.copy_length
            seq.num_cached = seq.num_reused = reuse.cached
            self.running[seq.row] = seq
            admitted.append(seq)
        return admitted

    def plan(self) -> StepPlan:
        """Decode every row past its prompt; share the step's prompt tokens among the prompts.

        How many prompt tokens the step takes is the budget's answer for its decoding rows:
        what fits in the inter-token target by the measured cost, so that the running streams
        never wait much longer than the target, yet prompts go in faster while few rows decode.
        """
        plan = StepPlan()
        prefilling = []
        for seq in self.running.values():
            (prefilling if seq.prefilling else plan.decode).append(seq)
        budget = self.budget.tokens(len(plan.decode)) if prefilling else 0
        for seq in prompt_order(prefilling):
            if budget <= 0:
                break
            if seq.copy_from is not None and not self._copy(seq, plan):
                continue  # its start is still being prefilled in another row
            length = min(budget, seq.num_prompt - seq.num_cached)
            plan.prefill.append(PromptChunk(seq, seq.num_cached, length))
            budget -= length
        return plan

    def _copy(self, seq: Sequence, plan: StepPlan) -> bool:
        """Plan seq's copy if its source row has the positions; False while they are to come.

        A source that has left (finished, cancelled) is given up: seq prefills what it lacks.
        """
        source = seq.copy_from
        if self.running.get(source.row) is source and source.num_cached < seq.copy_length:
            return False
        if self.running.get(source.row) is source:
            plan.copies.append(RowCopy(source.row, seq.row, seq.copy_length))
            seq.num_cached = seq.num_reused = seq.copy_length
        seq.copy_from = None
        return True


def prompt_order(prefilling: list[Sequence]) -> list[Sequence]:
    """The order in which prompts share a step's budget: the oldest first, so that none waits
    forever, then the others by how few tokens they lack, so that a short question admitted
    beside long documents has its first token after a step or two, not after the documents.
    (Shortest first is what minimizes the mean wait; serving documents one by one in arrival
    order held the median time to first token at several seconds under a burst.)"""
    if len(prefilling) < 2:
        return prefilling
    oldest = min(prefilling, key=lambda s: (s.admitted_at, s.arrival))
    rest = sorted((s for s in prefilling if s is not oldest),
                  key=lambda s: (s.num_prompt - s.num_cached, s.admitted_at, s.arrival))
    return [oldest, *rest]
