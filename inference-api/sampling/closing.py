"""The short completion of a half-generated structured output, for both backends.

When max_tokens is about to cut a structured output, the row instead ends with a short
continuation that completes it, so the answer always parses. The search is greedy, one byte at a
time (every byte has a token of its own), taking the bytes the grammar forces in one go, and
picks among the allowed bytes by the orders below.
"""
from __future__ import annotations

from dataclasses import dataclass

import llguidance

from inference_api.quote import one_line

MAX_CLOSING_STEPS = 512
# Where few bytes are allowed (between JSON values): close a container, end a value with a
# separator (a number could grow forever), else start the shortest value.
STRUCTURAL_ORDER = b'}],:0"123456789[{' + bytes(range(0x21, 0x7F)) + b" "
# Where most bytes are allowed (inside a string): close it; else punctuation before letters,
# since a pattern's separator (an "@" or ".") is what moves it on.
FREE_ORDER = (b'"' + bytes(c for c in range(0x21, 0x7F) if not chr(c).isalnum() and c != 0x5C)
              + b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ \\")
FREE_MIN_ALLOWED = 24  # printable bytes allowed from which a position counts as free text


def _ranks(order: bytes) -> dict[int, int]:
    """Each byte's place in a preference order (its first place; earlier is better)."""
    ranks: dict[int, int] = {}
    for place, value in enumerate(order):
        ranks.setdefault(value, place)
    return ranks


STRUCTURAL_RANK, FREE_RANK = _ranks(STRUCTURAL_ORDER), _ranks(FREE_ORDER)


@dataclass(frozen=True)
class Accepted:
    """What a row takes for its sampled token.

    closing empty: the token, as sampled. closing given: these tokens replace it and the row
    ends: they complete the grammar and hold no EOS, so it ends with "length"; except a lone
    EOS, given when the output was complete already, which ends it as EOS does. error given:
    the matcher failed and no completion was found; the row ends with this error.
    """

    closing: tuple[int, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Closing:
    """A short continuation that completes a grammar: its tokens (no EOS) and whether it does."""

    tokens: tuple[int, ...]
    complete: bool


def start_matcher(tokenizer: llguidance.LLTokenizer, byte_tokens: list[int | None],
                  grammar: str, max_tokens: int) -> tuple[llguidance.LLMatcher, int]:
    """A row's matcher and the length of its shortest closing; ValueError when the grammar is
    invalid or its shortest output takes more than max_tokens."""
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise ValueError(f"the grammar is not valid: {one_line(matcher.get_error())}")
    first = closing(matcher, tokenizer, byte_tokens, max_tokens)
    if first.complete and len(first.tokens) <= max_tokens:
        return matcher, len(first.tokens)
    if not first.complete:
        first = closing(matcher, tokenizer, byte_tokens, MAX_CLOSING_STEPS)
    if first.complete:
        raise ValueError(f"max_tokens {max_tokens} is too small for this schema: at least "
                         f"{len(first.tokens)} tokens are needed")
    raise ValueError(f"no output of this grammar was found in {MAX_CLOSING_STEPS} steps of "
                     "search: it cannot be served")


def single_byte_tokens(tokenizer: llguidance.LLTokenizer) -> list[int | None]:
    """For each byte value, the token that is exactly that byte (None where there is none)."""
    found: list[int | None] = []
    for value in range(256):
        ids = tokenizer.tokenize_bytes(bytes([value]))
        ok = len(ids) == 1 and tokenizer.decode_bytes(ids) == bytes([value])
        found.append(ids[0] if ok else None)
    return found


def allowed_bytes(matcher: llguidance.LLMatcher, byte_tokens: list[int | None]) -> list[int]:
    """Byte values whose single-byte token the matcher allows next."""
    # 32-bit little-endian words: token t is bit t % 8 of byte t // 8.
    mask = matcher.compute_bitmask()
    return [value for value, token in enumerate(byte_tokens)
            if token is not None and mask[token >> 3] >> (token & 7) & 1]


def pick_closing_byte(allowed: list[int], uses: dict[int, int], previous: int | None) -> int:
    """The allowed byte that best moves towards the end of the grammar."""
    printable = [b for b in allowed if 0x20 <= b < 0x7F]
    if len(printable) < FREE_MIN_ALLOWED:
        # Repeating the byte just taken is how a number never ends ("0.000..."); closers may.
        return min(allowed, key=lambda b: (b == previous and b not in b"}]",
                                           STRUCTURAL_RANK.get(b, 256 + b)))
    # In free text a byte already used makes no progress on a pattern: try others first.
    return min(allowed, key=lambda b: (uses.get(b, 0) if b != 0x22 else 0,
                                       FREE_RANK.get(b, 256 + b)))


def closing(matcher: llguidance.LLMatcher, tokenizer: llguidance.LLTokenizer,
            byte_tokens: list[int | None], limit: int) -> Closing:
    """A short token sequence that takes the matcher to an accepting state (the matcher is left
    as it was); gives up, incomplete, past `limit` tokens or MAX_CLOSING_STEPS bytes."""
    if matcher.is_error():
        return Closing((), False)
    probe = matcher.deep_copy()
    taken: list[int] = []
    uses: dict[int, int] = {}
    previous: int | None = None
    for _ in range(MAX_CLOSING_STEPS):
        if probe.is_accepting():
            return Closing(_shortest(matcher, tokenizer, taken), True)
        if len(taken) > limit * 4 + 16:  # mostly byte tokens: retokenized, about 4x fewer
            break
        forced = probe.compute_ff_bytes()
        if forced:
            step, previous = tokenizer.tokenize_bytes(forced), forced[-1]
        else:
            allowed = allowed_bytes(probe, byte_tokens)
            if not allowed:
                break
            previous = pick_closing_byte(allowed, uses, previous)
            uses[previous] = uses.get(previous, 0) + 1
            step = [byte_tokens[previous]]
        if not probe.consume_tokens(step):
            break
        taken += step
    return Closing(tuple(taken), False)


def _shortest(matcher: llguidance.LLMatcher, tokenizer: llguidance.LLTokenizer,
              taken: list[int]) -> tuple[int, ...]:
    """The closing bytes in the tokenizer's own (shorter) tokens, when the grammar takes them."""
    tokens = tokenizer.tokenize_bytes(tokenizer.decode_bytes(taken))
    if len(tokens) < len(taken):
        probe = matcher.deep_copy()
        if probe.consume_tokens(tokens) and probe.is_accepting():
            return tuple(tokens)
    return tuple(taken)
