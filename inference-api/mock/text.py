"""The mock's text: words of the prompt numbered by position, or the bytes of a structured output.

Token number i of a prompt's answer is mock_word(prompt, i), so tests can predict every answer
(mock_answer); a request for a LoRA adapter (LORA_MODULES) gets the same words, each after the
adapter's name and a colon, so that tests see which adapter a request reached. Rows with a
grammar draw byte tokens instead (grammar.py), read as UTF-8.
"""
from __future__ import annotations

import codecs

from inference_api.engine.sequence import Sequence
from inference_api.engine.text_state import TextMaker, TextState

from .grammar import MOCK_GRAMMAR_EOS


def mock_word(prompt_text: str, index: int, adapter: str | None = None) -> str:
    """The mock's token number `index` for a prompt: a word of the prompt and the index (after
    `adapter:` for a request run with an adapter)."""
    words = prompt_text.split() or ["empty"]
    return f"{adapter + ':' if adapter else ''}{words[index % len(words)]}{index} "


class MockDetokenizer:
    """The mock's text: token number i of a prompt is mock_word(prompt, i)."""

    def __init__(self, seq: Sequence):
        self.prompt_text, self.adapter = seq.prompt_text, getattr(seq, "adapter", None)

    def push(self, token_id: int) -> str:
        """The word of this token."""
        return mock_word(self.prompt_text, token_id, self.adapter)


def mock_answer(prompt_text: str, num_tokens: int, adapter: str | None = None) -> str:
    """The whole text the mock generates for a prompt in num_tokens tokens."""
    return "".join(mock_word(prompt_text, i, adapter) for i in range(num_tokens))


class ByteDetokenizer:
    """Text of a constrained mock row: its byte tokens decoded as UTF-8, a character at a time."""

    def __init__(self, seq=None):
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text this byte completes ('' inside a multi-byte character)."""
        if not 0 <= token_id < 256:
            return ""
        return self.decoder.decode(bytes([token_id]))


class MockTextMaker(TextMaker):
    """The mock's TextMaker: word text, except that rows with a grammar get byte text and end
    at MOCK_GRAMMAR_EOS."""

    def __init__(self):
        super().__init__(MockDetokenizer)

    def __call__(self, seq) -> TextState:
        """A fresh TextState for an admitted Sequence."""
        state = super().__call__(seq)
        if seq.params.grammar is not None:
            state.detokenizer = ByteDetokenizer(seq)
            state.eos_ids = state.eos_ids | {MOCK_GRAMMAR_EOS}
        return state
