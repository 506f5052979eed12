"""Structured outputs on the mock backend (no torch, no numpy): one token per byte, each step's
byte drawn among those the grammar allows, reproducibly, closing in time for max_tokens."""
from __future__ import annotations

import random

import llguidance

from inference_api.sampling.closing import Accepted, closing, start_matcher

MOCK_GRAMMAR_EOS = 256  # token ids 0..255 are the bytes themselves
BYTE_TOKENS: list[int | None] = list(range(256))
# How often a step follows the shortest closing rather than a random byte: this keeps strings
# and containers short (a random pick would close a string once in ~95 draws).
CLOSE_CHANCE = 0.35
# Random bytes come from letters, digits and JSON's punctuation where the grammar allows any,
# so the text stays readable; otherwise from whatever it allows.
NICE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                       b' .,:-_"{}[]')


class _ByteVocabulary:
    """The tokenizer llguidance.TokenizerWrapper reads: 256 one-byte tokens, then EOS."""

    eos_token_id = MOCK_GRAMMAR_EOS
    bos_token_id = None
    tokens = [bytes([value]) for value in range(256)] + [b"<eos>"]
    special_token_ids = [MOCK_GRAMMAR_EOS]

    def __call__(self, text) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))


def byte_tokenizer() -> llguidance.LLTokenizer:
    """llguidance's tokenizer for the mock's byte tokens."""
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteVocabulary()))


def allowed_tokens(matcher: llguidance.LLMatcher) -> list[int]:
    """Token ids (bytes and EOS) the matcher allows next."""
    mask = matcher.compute_bitmask()  # token t is bit t % 8 of byte t // 8
    return [t for t in range(MOCK_GRAMMAR_EOS + 1) if mask[t >> 3] >> (t & 7) & 1]


class MockGrammarRows:
    """The mock's matchers for the rows whose requests carry a grammar."""

    def __init__(self):
        self.tokenizer = byte_tokenizer()
        self.rows: dict[int, tuple[llguidance.LLMatcher, int, int]] = {}  # matcher, max, seed

    def add(self, row: int, grammar: str, max_tokens: int, seed: int) -> None:
        """A fresh matcher for a row whose draws follow `seed`; ValueError as GrammarRows.add."""
        matcher, _ = start_matcher(self.tokenizer, BYTE_TOKENS, grammar, max_tokens)
        self.rows[row] = (matcher, max_tokens, seed)

    def remove(self, row: int) -> None:
        """Forget a row's matcher."""
        self.rows.pop(row, None)

    def constrained(self, row: int) -> bool:
        """Whether a row carries a grammar."""
        return row in self.rows

    def choose(self, row: int, step: int) -> int:
        """The row's token number `step` (counting from 0): a byte its grammar allows, or EOS.

        Random but reproducible for a seed, it always leaves room to complete the grammar
        within max_tokens, and follows the shortest closing when there is no more room.
        """
        matcher, max_tokens, seed = self.rows[row]
        left = max_tokens - step  # tokens the row may still take, this one included
        allowed = allowed_tokens(matcher)
        if MOCK_GRAMMAR_EOS in allowed:
            return MOCK_GRAMMAR_EOS  # the output is complete: end it
        draw = random.Random(f"{seed}:{step}")  # a str seed is hashed the same in every run
        shortest = closing(matcher, self.tokenizer, BYTE_TOKENS, left)
        if not shortest.complete or not shortest.tokens:
            return min(allowed)  # cannot happen after start_matcher's check; keeps going
        if len(shortest.tokens) >= left or draw.random() < CLOSE_CHANCE:
            return shortest.tokens[0]
        nice = sorted(NICE_BYTES.intersection(allowed)) or [t for t in allowed
                                                             if t != MOCK_GRAMMAR_EOS]
        pick = draw.choice(nice)
        return pick if self._fits(matcher, pick, left - 1) else shortest.tokens[0]

    def accept(self, row: int, token: int, remaining: int) -> Accepted:
        """Advance a row's matcher by the token choose() gave (`remaining` as in
        GrammarRows.accept; choose() already kept room, so no closing is ever needed)."""
        entry = self.rows.get(row)
        if entry is None or entry[0].consume_token(token):
            return Accepted()
        return Accepted(error=f"structured output failed: {entry[0].get_error()[:300]}")

    def _fits(self, matcher: llguidance.LLMatcher, token: int, left: int) -> bool:
        """Whether, after token, the grammar can still be completed in `left` tokens."""
        probe = matcher.deep_copy()
        if not probe.consume_token(token):
            return False
        after = closing(probe, self.tokenizer, BYTE_TOKENS, left)
        return after.complete and len(after.tokens) <= left
