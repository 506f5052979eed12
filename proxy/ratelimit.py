"""Per-token rate limits: requests and generated tokens per window (PROXY_RATE_LIMIT_RPM,
PROXY_RATE_LIMIT_TPM, PROXY_RATE_LIMIT_WINDOW), each overridable by the token's `rpm` and `tpm`
claims. Fixed windows aligned to the clock, counted in a RateStore (rate_store.py)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from .claims import TokenPolicy
from .errors import RequestError
from .rate_store import RateStore, Usage


@dataclass
class Admission:
    """A request let through: its window, its limits (0 = none) and the usage it saw."""

    key: str
    rpm: int
    tpm: int
    usage: Usage
    reset_s: float

    @property
    def counts_tokens(self) -> bool:
        """Whether the answer's generated tokens must be counted."""
        return self.tpm > 0

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the limits that apply."""
        return limit_headers(self.rpm, self.tpm, self.usage, self.reset_s)


class RateLimiter:
    """Admits a token's request or refuses it with 429; counts the tokens its answer made."""

    def __init__(self, store: RateStore, rpm: int, tpm: int, window_s: float,
                 clock: Callable[[], float] = time.time):
        self.store, self.rpm, self.tpm, self.window_s = store, rpm, tpm, window_s
        # Wall-clock time, not monotonic: replicas sharing a store must agree on the windows.
        self.clock = clock

    def _window(self) -> tuple[int, float]:
        now = self.clock()
        window = int(now // self.window_s)
        return window, (window + 1) * self.window_s - now

    async def admit(self, key: str, policy: TokenPolicy) -> Admission | None:
        """Count the request, or raise the 429 if the token is over a limit; None if no limit."""
        rpm = self.rpm if policy.rpm is None else policy.rpm
        tpm = self.tpm if policy.tpm is None else policy.tpm
        if not rpm and not tpm:
            return None
        window, reset_s = self._window()
        usage = await self.store.usage(key, window)
        if tpm and usage.tokens >= tpm:
            raise self._refusal("tokens", tpm, rpm, tpm, usage, reset_s)
        if rpm:
            usage = await self.store.count_request(key, window)
            if usage.requests > rpm:
                raise self._refusal("requests", rpm, rpm, tpm, usage, reset_s)
        return Admission(key, rpm, tpm, usage, reset_s)

    async def count_tokens(self, admission: Admission, tokens: int) -> None:
        """Count the tokens an admitted request's answer generated, in the window it ended in."""
        await self.store.add_tokens(admission.key, self._window()[0], tokens)

    def _refusal(self, what: str, limit: int, rpm: int, tpm: int, usage: Usage,
                 reset_s: float) -> RequestError:
        headers = limit_headers(rpm, tpm, usage, reset_s)
        headers["Retry-After"] = str(max(1, math.ceil(reset_s)))
        return RequestError(
            429, f"rate limit reached for this token: {limit} {what} per {self.window_s:g} s; "
                 f"retry in {headers['Retry-After']} s", f"rate_limited_{what}", headers=headers,
            code="rate_limit_exceeded")


def limit_headers(rpm: int, tpm: int, usage: Usage, reset_s: float) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits that are set."""
    headers = {}
    for kind, limit, used in (("requests", rpm, usage.requests), ("tokens", tpm, usage.tokens)):
        if limit:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - used))
            headers[f"x-ratelimit-reset-{kind}"] = duration(reset_s)
    return headers


def duration(seconds: float) -> str:
    """A time to wait as OpenAI writes it: `12s`, `6m0s` (whole seconds, rounded up)."""
    total = max(1, math.ceil(seconds))
    minutes, secs = divmod(total, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
