"""Per-token cap on requests in flight (PROXY_MAX_STREAMS_PER_TOKEN)."""
from __future__ import annotations

import threading
from collections import Counter


class TokenLimiter:
    """Counts open requests per token; acquire() says no once a token holds `limit` (0 = no cap)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: Counter = Counter()
        self._lock = threading.Lock()

    def acquire(self, key) -> bool:
        """Take a slot for key, or return False if it already holds the limit."""
        if not self.limit:
            return True
        with self._lock:
            if self._open[key] >= self.limit:
                return False
            self._open[key] += 1
            return True

    def release(self, key) -> None:
        """Give back a slot taken by acquire()."""
        if not self.limit:
            return
        with self._lock:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]  # keep the table as small as the set of active tokens
