"""The plan of one step, the scheduler's output and the runner's input: what to copy between rows,
which rows decode a token and which prompt chunks are prefilled."""
from __future__ import annotations

from dataclasses import dataclass, field

from .sequence import Sequence


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
class RowCopy:
    """Copy cache positions [0, length) of one row to another before the step's forward."""

    source: int
    target: int
    length: int


@dataclass
class StepPlan:
    """One step: cache copies, a token for each decoding row and prompt chunks within the budget."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[PromptChunk] = field(default_factory=list)
    copies: list[RowCopy] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill or self.copies)
