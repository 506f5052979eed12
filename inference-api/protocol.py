"""Messages between the frontend and the backend process (picklable, no torch)."""
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
    """Frontend -> backend: start generating for a session."""

    session_id: str
    prompt_ids: list[int]
    params: object  # SamplingParams
    prompt_text: str = ""  # emitted first when params.return_prompt


@dataclass
class Cancel:
    """Frontend -> backend: the client left; free the session's row."""

    session_id: str


@dataclass
class Shutdown:
    """Frontend -> backend: finish the running step and exit."""


@dataclass
class Output:
    """Backend -> frontend: new text for one session; the last one has finish_reason and usage."""

    session_id: str
    text: str
    num_tokens: int = 0  # tokens generated since the previous Output of this session
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None
    queue_seconds: float | None = None  # on the first Output: time from arrival to admission
    cached_tokens: int | None = None  # on the first Output: prompt tokens reused from the cache


@dataclass
class Ready:
    """Backend -> frontend: the model is loaded and warmed up."""

    info: dict = field(default_factory=dict)


@dataclass
class Heartbeat:
    """Backend -> frontend: alive, with how busy it is."""

    busy_rows: int
    queued: int


@dataclass
class Fatal:
    """Backend -> frontend: the backend cannot start or go on (e.g. the model does not load)."""

    message: str
