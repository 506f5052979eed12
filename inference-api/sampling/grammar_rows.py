"""Structured outputs on the real model: an llguidance matcher per constrained row, every mask of
a step computed in parallel, and closings that complete an output max_tokens would cut."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import llguidance
import torch

from .closing import Accepted, Closing, closing, single_byte_tokens, start_matcher

log = logging.getLogger(__name__)

# Closings are only looked for near the end of a row's budget: once the tokens left are within
# this many of the last closing found. Further away, a closing is re-measured every
# REMEASURE_EVERY tokens, so a deepening output moves the watch point with it.
CLOSING_TAIL = 64
REMEASURE_EVERY = 32


@dataclass
class _Row:
    matcher: llguidance.LLMatcher
    closing_length: int  # of the last closing measured
    measured_at: int  # the tokens left when it was


def build_tokenizer(tokenizer_json: str, eos_ids: tuple[int, ...],
                    vocab_size: int) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for the model, padded to the model's logits width where wider."""
    try:
        return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=list(eos_ids))
    except ValueError:  # logits narrower than the tokenizer: the extra ids are never sampled
        return llguidance.LLTokenizer(tokenizer_json, eos_token=list(eos_ids))


def byte_penalties() -> torch.Tensor:
    """What to add to the logits of the 8 tokens of a bitmask byte, for each byte value:
    0 where the bit is set (allowed), -inf where clear ([256, 8] float32)."""
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1  # [256, 8]
    return torch.zeros(256, 8).masked_fill_(bits == 0, -math.inf)


def token_penalties(bitmask: torch.Tensor, table: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Bitmask words [m, words] int32 as additive penalties [m, vocab_size] (0 or -inf)."""
    # llguidance writes native 32-bit words, little-endian here: token t is bit t % 8 of
    # byte t // 8. A table lookup per byte is several times faster than masked_fill_ on CPU.
    rows = bitmask.shape[0]
    penalties = torch.nn.functional.embedding(bitmask.view(torch.uint8).long(), table)
    penalties = penalties.view(rows, -1)  # [m, 32 * words]
    if penalties.shape[1] >= vocab_size:
        return penalties[:, :vocab_size]
    # Ids past the tokenizer have no text: never allowed.
    return torch.nn.functional.pad(penalties, (0, vocab_size - penalties.shape[1]),
                                   value=-math.inf)


class GrammarRows:
    """The matchers of the rows whose requests carry a grammar."""

    def __init__(self, tokenizer_json: str, eos_ids: tuple[int, ...], vocab_size: int,
                 max_rows: int):
        self.tokenizer = build_tokenizer(tokenizer_json, eos_ids, vocab_size)
        self.byte_tokens = single_byte_tokens(self.tokenizer)
        self.eos_ids = frozenset(eos_ids)
        self.executor = llguidance.LLExecutor()
        words = (self.tokenizer.vocab_size + 31) // 32
        self.bitmask = torch.full((max_rows, words), -1, dtype=torch.int32)  # CPU: llguidance's
        self.tables: dict[torch.device, torch.Tensor] = {}  # byte_penalties() per device
        self.rows: dict[int, _Row] = {}

    def add(self, row: int, grammar: str, max_tokens: int) -> None:
        """A fresh matcher for a row; ValueError when the grammar is invalid or cannot be
        completed within max_tokens."""
        matcher, closing_length = start_matcher(self.tokenizer, self.byte_tokens, grammar,
                                                max_tokens)
        self.rows[row] = _Row(matcher, closing_length, max_tokens)

    def remove(self, row: int) -> None:
        """Forget a row's matcher."""
        self.rows.pop(row, None)

    def constrained(self, rows: list[int]) -> list[int]:
        """Positions in rows of those that carry a grammar."""
        return [i for i, row in enumerate(rows) if row in self.rows]

    def mask(self, rows: list[int], logits: torch.Tensor) -> None:
        """Set the logits of tokens each constrained row's grammar forbids to -inf, in place.

        logits [n, vocab] float; its row i belongs to batch row rows[i]. Unconstrained rows are
        untouched.
        """
        picked = self.constrained(rows)
        if not picked:
            return
        bitmask = self.bitmask[:len(picked)]  # [m, words], contiguous
        # What llguidance.torch.fill_next_token_bitmask_par does, without importing that module
        # (it pulls in torch's compiler: seconds at start-up).
        self.executor.unsafe_compute_mask_ptr(
            [(self.rows[rows[i]].matcher, k) for k, i in enumerate(picked)],
            bitmask.data_ptr(), bitmask.shape[1] * 4, len(picked))
        device = logits.device
        if device not in self.tables:
            self.tables[device] = byte_penalties().to(device)
        penalties = token_penalties(bitmask.to(device), self.tables[device], logits.shape[1])
        if len(picked) == len(rows):
            logits.add_(penalties)  # -inf where banned; + 0 leaves a logit exactly as it was
        else:
            logits.index_add_(0, torch.tensor(picked, device=device), penalties)

    def accept(self, row: int, token: int, remaining: int) -> Accepted:
        """Advance a row's matcher by its sampled token; `remaining` is how many more tokens
        the row may generate after this one. See Accepted for what the caller does."""
        state = self.rows.get(row)
        if state is None:
            return Accepted()
        matcher = state.matcher
        if token in self.eos_ids and matcher.is_accepting():
            matcher.consume_token(token)
            return Accepted()
        if matcher.validate_tokens([token]) != 1:  # the mask should make this impossible
            log.warning("row %d: token %d is outside its grammar; closing the output", row, token)
            return self._close(row, matcher, remaining + 1)
        if not matcher.consume_token(token):
            return self._failed(row, matcher)
        if not self._near_end(state, remaining):
            return Accepted()
        after = self._closing(matcher, remaining)
        if after.complete and len(after.tokens) <= remaining:
            state.closing_length, state.measured_at = len(after.tokens), remaining
            return Accepted()
        # The token would leave too little room to complete the output: the closing from before
        # it goes instead. It fits unless the closing grew faster than the checks thickened
        # (then it runs over max_tokens by a little, with a warning: still valid output).
        matcher.rollback(1)
        return self._close(row, matcher, remaining + 1)

    def _near_end(self, state: _Row, remaining: int) -> bool:
        """Whether to measure the closing now: often near the end of the budget, rarely before."""
        slack = remaining - state.closing_length
        since = state.measured_at - remaining
        if slack > CLOSING_TAIL:
            return since >= REMEASURE_EVERY
        return since >= slack // 4  # checks thicken as the room runs out

    def _close(self, row: int, matcher: llguidance.LLMatcher, budget: int) -> Accepted:
        """End the row with the closing from the matcher's state (a lone EOS when the output
        is already complete, so the row still ends)."""
        found = self._closing(matcher, budget)
        if not found.complete:
            return self._failed(row, matcher)
        if len(found.tokens) > budget:
            log.warning("row %d: closing takes %d tokens, %d over max_tokens", row,
                        len(found.tokens), len(found.tokens) - budget)
        if not found.tokens:
            return Accepted(closing=(min(self.eos_ids),)) if self.eos_ids else Accepted()
        matcher.consume_tokens(list(found.tokens))
        return Accepted(closing=found.tokens)

    def _failed(self, row: int, matcher: llguidance.LLMatcher) -> Accepted:
        message = matcher.get_error() or "no way to complete the grammar was found"
        log.error("row %d: structured output failed: %s", row, message)
        return Accepted(error=f"structured output failed: {message[:300]}")

    def _closing(self, matcher: llguidance.LLMatcher, limit: int) -> Closing:
        return closing(matcher, self.tokenizer, self.byte_tokens, limit)
