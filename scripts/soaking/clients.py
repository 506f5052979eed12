"""The soak's clients: threads that each draw their next request from a seed and send it, and
the reference answers of the idle server that every answer is held to."""
from __future__ import annotations

import random
import threading
import time

from .answers import COMPLETE, ERROR, REFUSED, Result, send
from .calls import Call, draw, greedy_pool
from .stack import SoakStack


class Traffic:
    """Clients looping over the mix until stopped; every Result kept for the checks."""

    def __init__(self, stack: SoakStack, seed: int, clients: int, max_tokens: int):
        self.stack, self.seed, self.clients, self.max_tokens = stack, seed, clients, max_tokens
        self.pool = greedy_pool(max_tokens)
        self.results: list[Result] = []
        self.references: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def headers(self, client: str, call: Call) -> dict:
        claims = {"exp": int(time.time()) - 3600} if call.token == "expired" else {}
        return {"Authorization": f"Bearer {self.stack.token(client, **claims)}"}

    def take_references(self) -> list[str]:
        """Each answerable request once, alone on the idle stack; the problems, if any."""
        problems = []
        for call in self.pool:
            result = send(call, self.stack.client_url, self.headers("reference", call))
            if result.outcome != COMPLETE:
                problems.append(f"{call.kind} {call.key[:80]}: {result.outcome} {result.detail}")
            self.references[call.key] = result.texts
        return problems

    def start(self) -> None:
        def loop(index: int) -> None:
            rng = random.Random(self.seed * 1000 + index)
            name = f"client-{index}"
            while not self._stop.is_set():
                call = draw(rng, self.pool, self.max_tokens)
                result = send(call, self.stack.client_url, self.headers(name, call))
                with self._lock:
                    self.results.append(result)
                # As a well-behaved client does: wait as told, or a moment when nobody answered.
                if result.outcome == ERROR and result.retry_after:
                    self._stop.wait(min(result.retry_after, 2.0))
                elif result.outcome == REFUSED:
                    self._stop.wait(0.5)

        self._threads = [threading.Thread(target=loop, args=(i,), name=f"soak-client-{i}",
                                          daemon=True) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 330.0) -> list[str]:
        """Stop drawing new requests and wait for those under way; names clients still stuck."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)
