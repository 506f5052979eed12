"""Token-by-token text for streaming: UTF-8 safe decoding and stop strings matched across tokens."""
from __future__ import annotations

from tokenizers.decoders import DecodeStream

PRIME_TOKENS = 16  # prompt tokens given to the decoder as context; enough for any leading space
REPLACEMENT = "\ufffd"


def prime_ids(tokenizer, prompt_ids: list[int], skip_special_tokens: bool) -> tuple[list, list]:
    """Split the prompt's tail into context that decodes cleanly and a half character after it."""
    tail = list(prompt_ids[-PRIME_TOKENS:])
    pending: list[int] = []
    # A prompt ending inside a multi-byte character would make the decoder drop its context
    # and repeat the prompt; feed those last tokens as pending bytes instead.
    while tail and tokenizer.decode(tail, skip_special_tokens=skip_special_tokens).endswith(
            REPLACEMENT) and len(pending) < 4:
        pending.insert(0, tail.pop())
    return tail, pending


class IncrementalDetokenizer:
    """Turns one row's generated tokens into text, one token at a time."""

    def __init__(self, tokenizer, prompt_ids: list[int], skip_special_tokens: bool = True):
        # A transformers tokenizer is accepted too: its fast backend does the work.
        self.tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
        self.skip_special_tokens = skip_special_tokens
        # Priming with the prompt's tail gives the first token its context, so a Metaspace
        # tokenizer keeps the leading space it would strip at the start of a text.
        context, pending = prime_ids(self.tokenizer, prompt_ids, skip_special_tokens)
        self.stream = DecodeStream(context, skip_special_tokens=skip_special_tokens)
        for token_id in pending:
            self.stream.step(self.tokenizer, token_id)

    def push(self, token_id: int) -> str:
        """The new text this token completes; '' while a character is still incomplete."""
        text = self.stream.step(self.tokenizer, token_id)
        return text or ""


class StopMatcher:
    """Cuts the streamed text at the first stop string, holding back what could start one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, stopped?); nothing from a stop string on is ever emitted."""
        if self.stopped:
            return "", True
        if not self.stops:
            return text, False
        buf = self.held + text
        cut = first_stop(buf, self.stops)
        if cut is not None:
            self.held, self.stopped = "", True
            self.matched = next(s for s in self.stops if buf.startswith(s, cut))
            return buf[:cut], True
        keep = partial_stop_len(buf, self.stops)
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def flush(self) -> str:
        """At the end of generation without a stop: the text held back."""
        text, self.held = ("" if self.stopped else self.held), ""
        return text


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def partial_stop_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of text that is a proper prefix of some stop string."""
    longest = min(len(text), max(len(s) for s in stops) - 1)
    for n in range(longest, 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0
