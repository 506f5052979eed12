"""A sequence's streamed text: each new token through EOS, the detokenizer and the stop strings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from inference_api.process_messages import FINISH_EOS, FINISH_STOP

from .detokenize import IncrementalDetokenizer, StopMatcher


class Detokenizer(Protocol):
    """One sequence's incremental decoder."""

    def push(self, token_id: int) -> str:
        """The new text this token completes ('' while a character is incomplete)."""


@dataclass
class TextState:
    """What the engine keeps per sequence to turn its tokens into text."""

    detokenizer: Detokenizer
    stops: StopMatcher
    eos_ids: frozenset[int]  # empty under ignore_eos
    pending_tokens: int = 0  # tokens not yet counted in an Output
    started: bool = False  # an Output went out (return_prompt puts the prompt in the first)
    reported_queue: bool = False  # the time waiting for a row went out

    def push(self, token_id: int) -> tuple[str, str | None]:
        """(text safe to send now, FINISH_EOS or FINISH_STOP or None) for one new token."""
        self.pending_tokens += 1
        if token_id in self.eos_ids:
            return "", FINISH_EOS
        text, stopped = self.stops.push(self.detokenizer.push(token_id))
        return text, FINISH_STOP if stopped else None


class TextMaker:
    """Gives each admitted sequence its TextState: the served tokenizer's decoder and EOS ids.

    new_detokenizer takes the Sequence and returns its Detokenizer.
    """

    def __init__(self, new_detokenizer: Callable[..., Detokenizer],
                 eos_ids: tuple[int, ...] = ()):
        self.new_detokenizer = new_detokenizer
        self.eos_ids = frozenset(eos_ids)

    @classmethod
    def for_tokenizer(cls, tokenizer, eos_ids: tuple[int, ...]) -> "TextMaker":
        """Texts decoded by a Hugging Face tokenizer, each primed with its prompt's tail."""
        return cls(lambda seq: IncrementalDetokenizer(tokenizer, seq.prompt_ids), eos_ids)

    def __call__(self, seq) -> TextState:
        """A fresh TextState for an admitted Sequence."""
        params = seq.params
        eos = frozenset() if params.ignore_eos else self.eos_ids | set(params.eos_token_ids)
        return TextState(self.new_detokenizer(seq), StopMatcher(tuple(params.stop)), eos)
