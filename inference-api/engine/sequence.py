"""One request's state inside the backend: its tokens, row and progress."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from inference_api.process_messages import TokenLogprob

from .text_state import TextState


@dataclass
class Sequence:
    """A prompt and what has been generated for it so far."""

    session_id: str
    prompt_ids: list[int]
    params: object  # SamplingParams
    prompt_text: str = ""
    adapter: str | None = None  # the LoRA adapter the request runs with; None: the base model
    arrival: float = field(default_factory=time.monotonic)
    row: int | None = None
    admitted_at: float | None = None
    num_cached: int = 0  # tokens whose keys and values are in the cache
    num_reused: int = 0  # of them, prompt tokens found cached (prefix reuse)
    copy_from: "Sequence | None" = None  # a busy sequence whose row has more of the prompt
    copy_length: int = 0  # positions to copy from copy_from's row before prefilling the rest
    generated: list[int] = field(default_factory=list)
    text: TextState | None = None  # the engine's: detokenizer, stop matcher, EOS ids, counts
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent, when asked for
    prompt_logprobs: list[TokenLogprob | None] | None = None  # filled while the prompt prefills

    @property
    def num_prompt(self) -> int:
        """Prompt length in tokens."""
        return len(self.prompt_ids)

    @property
    def prefilling(self) -> bool:
        """True while prompt tokens remain to be put in the cache."""
        return self.num_cached < self.num_prompt

    @property
    def wants_prompt_logprobs(self) -> bool:
        """True when every prompt position's logits are needed (so none can come from a cache)."""
        return self.params.prompt_logprobs is not None

    @property
    def position(self) -> int:
        """Position of the next token to feed: the last generated one."""
        return self.num_prompt + len(self.generated) - 1

    @property
    def last_token(self) -> int:
        """The token to feed at the next decode step."""
        return self.generated[-1]


@dataclass
class NewToken:
    """What one step gave a sequence: its next token, and what comes with it when asked for."""

    seq: Sequence
    token: int
    logprob: TokenLogprob | None = None
    # Tokens that complete a structured output which max_tokens would otherwise cut: they
    # replace `token`, and the sequence ends after them.
    closing: tuple[int, ...] = ()
    error: str | None = None  # the sequence cannot go on (its grammar failed): it ends with this
