"""Per-token cap on requests in flight (PROXY_MAX_STREAMS_PER_TOKEN)."""
from __future__ import annotations

from collections import Counter


class TokenLimiter:
    """Counts open requests per token; acquire() says no once a token holds `limit` (0 = no cap)."""

    def __init__(self, limit: int):
        self.limit = limit
        # One event loop calls acquire and release: no lock is needed.
        self._open: Counter = Counter()

    def acquire(self, key) -> bool:
        """Take a slot for key, or return False if it already holds the limit."""
        if not self.limit:
            return True
        if self._open[key] >= self.limit:
            return False
        self._open[key] += 1
        return True

    def release(self, key) -> None:
        """Give back a slot taken by acquire()."""
        if not self.limit:
            return
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]  # keep the table as small as the set of active tokens
