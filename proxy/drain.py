"""The drain after SIGTERM: whether new requests are still taken, and how many are in flight."""
from __future__ import annotations

import asyncio


class Drain:
    """Requests in flight, and whether the proxy is draining or already cutting what is left."""

    def __init__(self):
        self.draining = False
        self.stopping = False  # the drain is over: handlers still running are being cut
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    def start(self) -> None:
        """Begin counting; call from the serving event loop."""
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        """From now on /health and new requests get 503; running ones go on."""
        self.draining = True

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        if self._idle is not None:  # None: not serving yet, so nothing can be in flight
            await self._idle.wait()

    def enter(self) -> None:
        """A request has started."""
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    def leave(self) -> None:
        """A request has ended."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()
