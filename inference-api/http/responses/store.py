"""Stored responses (store: true) in the server's memory, for GET /v1/responses/{id} and for
previous_response_id: at most RESPONSES_STORE_MAX, each for at most RESPONSES_STORE_TTL_S.

The server runs one worker process (it owns the backend), so one store serves every request; it
is lost on restart, and the oldest response goes first when the store is full.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Stored:
    """A stored response: the answer as given, and the conversation it ends (its history, its
    input and its output as plain items), which a later request continues."""

    response: dict
    items: list[dict]
    stored_at: float


class ResponseStore:
    """Responses by id, bounded in count and age; safe to use from the server's threads."""

    def __init__(self, max_count: int, max_age_s: float, clock=time.monotonic):
        self.max_count, self.max_age_s, self.clock = max_count, max_age_s, clock
        self._entries: OrderedDict[str, Stored] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def put(self, response: dict, items: list[dict]) -> None:
        """Keep a response (the oldest goes when the store is full)."""
        with self._lock:
            self._expire()
            self._entries[response["id"]] = Stored(response, items, self.clock())
            while len(self._entries) > self.max_count:
                self._entries.popitem(last=False)

    def get(self, response_id: str) -> Stored | None:
        """The stored response, or None when it was never stored, was deleted or expired."""
        with self._lock:
            self._expire()
            return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        """Forget a response; False when there was none."""
        with self._lock:
            self._expire()
            return self._entries.pop(response_id, None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _expire(self) -> None:
        oldest_kept = self.clock() - self.max_age_s
        while self._entries:
            first = next(iter(self._entries.values()))
            if first.stored_at >= oldest_kept:
                return
            self._entries.popitem(last=False)
