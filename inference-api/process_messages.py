"""Messages on the queues between the server process and the backend process (picklable, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

# Why a generation ended.
FINISH_STOP = "stop"  # a stop string matched
FINISH_EOS = "eos"  # the model ended its answer
FINISH_LENGTH = "length"  # max_tokens reached
FINISH_CANCELLED = "cancelled"  # the client went away
FINISH_ERROR = "error"  # the request or the backend failed


@dataclass
class Submit:
    """Server -> backend: start generating for a session."""

    session_id: str
    prompt_ids: list[int]
    params: object  # SamplingParams
    prompt_text: str = ""  # emitted first when params.return_prompt
    adapter: str | None = None  # the LoRA adapter (LORA_MODULES) to run with; None: the base


@dataclass
class Cancel:
    """Server -> backend: the client left; free the session's row."""

    session_id: str


@dataclass
class Shutdown:
    """Server -> backend: finish the running step and exit."""


@dataclass
class TokenLogprob:
    """A token's log probability and the most likely tokens at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, log probability), most likely first
    texts: dict[int, str] | None = None  # the backend's own text of these ids (the mock's)


@dataclass
class Output:
    """Backend -> server: new text for one session; the last one has finish_reason and usage."""

    session_id: str
    text: str
    num_tokens: int = 0  # tokens generated since the previous Output of this session
    finish_reason: str | None = None
    stop: str | None = None  # with finish_reason "stop": the stop string that ended the text
    completion_tokens: int = 0
    error: str | None = None
    refused: bool = False  # with error: the request itself cannot run (a 400, not a failure)
    # With error: nothing was wrong with the request (the backend died or the server is
    # stopping), so the client may send it again after so many seconds (a 503, not a 500).
    retry_after: int | None = None
    queue_seconds: float | None = None  # on the first Output: time from arrival to admission
    cached_tokens: int | None = None  # on the first Output: prompt tokens reused from the cache
    logprobs: list[TokenLogprob] | None = None  # one per token of this Output, when asked for
    # On the first Output when asked for: one per prompt token, None for the first.
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class Ready:
    """Backend -> server: the model is loaded and warmed up."""

    info: dict = field(default_factory=dict)


@dataclass
class Heartbeat:
    """Backend -> server: alive, with how busy it is."""

    busy_rows: int
    queued: int
    cached_rows: int = 0  # free rows kept for prefix reuse
    row_faults: list[str] = field(default_factory=list)  # the scheduler's accounting faults


@dataclass
class Fatal:
    """Backend -> server: the backend cannot start or go on (e.g. the model does not load)."""

    message: str
