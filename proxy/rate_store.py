"""Where the per-token rate counts live: the RateStore interface and its in-memory store.

The counts are kept per token and per fixed window (window = int(now // window_s)). The
in-memory store serves one proxy process: with several proxy replicas each counts only the
requests it sees, so a token gets up to the limit from every replica. A shared store puts the
counts where every replica sees them, behind this same interface (docs/proxy.md, "Rate
limits"): with Redis, count_request is `INCR rl:{key}:{window}:req` plus `EXPIRE` of two
windows in one MULTI, add_tokens is `INCRBY rl:{key}:{window}:tok`, and usage is an `MGET`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

# Past this many tracked keys the in-memory store drops those of finished windows.
_SWEEP_AT = 10_000


@dataclass
class Usage:
    """What a key has used in one window."""

    requests: int = 0
    tokens: int = 0


class RateStore(ABC):
    """Counts of requests and generated tokens per (key, window). Async, so that a networked
    store (Redis) fits the same calls; every method is one atomic step on the store."""

    @abstractmethod
    async def usage(self, key: str, window: int) -> Usage:
        """What key has used in window so far."""

    @abstractmethod
    async def count_request(self, key: str, window: int) -> Usage:
        """Count one more request of key in window; its usage with that request counted."""

    @abstractmethod
    async def add_tokens(self, key: str, window: int, tokens: int) -> None:
        """Count tokens generated for key in window."""


class MemoryRateStore(RateStore):
    """The counts in this process's memory; one event loop calls it, so it needs no lock."""

    def __init__(self):
        self._counts: dict[str, tuple[int, Usage]] = {}

    def _current(self, key: str, window: int) -> Usage:
        entry = self._counts.get(key)
        if entry is not None and entry[0] == window:
            return entry[1]
        if entry is not None and entry[0] > window:
            return Usage()  # a late count for a window already over: nothing to keep
        if len(self._counts) >= _SWEEP_AT:
            self._sweep(window)
        usage = Usage()
        self._counts[key] = (window, usage)
        return usage

    def _sweep(self, window: int) -> None:
        # Only the current window's counts matter; older ones would hold memory for tokens
        # that have gone quiet.
        self._counts = {k: v for k, v in self._counts.items() if v[0] >= window}

    async def usage(self, key: str, window: int) -> Usage:
        entry = self._counts.get(key)
        if entry is None or entry[0] != window:
            return Usage()
        return Usage(entry[1].requests, entry[1].tokens)

    async def count_request(self, key: str, window: int) -> Usage:
        usage = self._current(key, window)
        usage.requests += 1
        return Usage(usage.requests, usage.tokens)

    async def add_tokens(self, key: str, window: int, tokens: int) -> None:
        if tokens > 0:
            self._current(key, window).tokens += tokens

    def __len__(self) -> int:
        return len(self._counts)
