"""The faults the soak injects on a schedule, one at a time, each timed until the stack serves
again: the backend SIGKILLed, an API replica stopped with SIGTERM and started again (a rolling
restart, edge form only), and the proxy restarted."""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

from hostile.stack import wait_until

from .stack import Server, SoakStack

BACKEND_KILL, ROLLING_RESTART, PROXY_RESTART = "backend killed", "replica restarted", \
    "proxy restarted"
RECOVERY_LIMIT_S = 300.0


@dataclass
class Event:
    """One injected fault: what, where, when, and when the stack served again (None: never)."""

    kind: str
    target: str
    started: float
    recovered: float | None = None
    phases: dict = field(default_factory=dict)  # seconds of each step, e.g. drain and start

    @property
    def seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.started


def plan(form: str, duration: float, every: float) -> list[tuple[float, str, int]]:
    """(offset in seconds, kind, replica index): at least one of each kind the form has, spread
    evenly; the last ends well before the run does, so the stack is whole when it ends."""
    kinds = [(BACKEND_KILL, 0), (PROXY_RESTART, 0)]
    if form == "edge":
        kinds = [(BACKEND_KILL, 0), (ROLLING_RESTART, 1), (PROXY_RESTART, 0),
                 (BACKEND_KILL, 1), (ROLLING_RESTART, 0)]
    count = max(len(kinds), int(duration // every))
    return [((i + 1) * duration / (count + 1), *kinds[i % len(kinds)]) for i in range(count)]


class Chaos:
    """Runs the plan in a thread; a fault waits until the previous one has recovered."""

    def __init__(self, stack: SoakStack, schedule: list[tuple[float, str, int]]):
        self.stack, self.schedule = stack, schedule
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-chaos", daemon=True)

    def start(self) -> None:
        self.began = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RECOVERY_LIMIT_S + 60)

    def _run(self) -> None:
        for offset, kind, replica in self.schedule:
            if self._stop.wait(max(0.0, self.began + offset - time.monotonic())):
                return
            api = self.stack.apis[replica % len(self.stack.apis)]
            action = {BACKEND_KILL: self._kill_backend, ROLLING_RESTART: self._restart,
                      PROXY_RESTART: self._restart}[kind]
            server = self.stack.proxy if kind == PROXY_RESTART else api
            event = Event(kind, server.name, time.monotonic())
            self.events.append(event)
            action(server, event)

    def _kill_backend(self, api: Server, event: Event) -> None:
        backend = self.stack.backend(api)
        if backend is None:
            event.phases["error"] = "no backend process found"
            return
        event.started = time.monotonic()
        backend.send_signal(signal.SIGKILL)
        # The server notices the death within a heartbeat check; wait for that, then for ready.
        noticed = wait_until(lambda: not api.ready(), 30, 0.02)
        event.phases["noticed"] = noticed
        if wait_until(api.ready, RECOVERY_LIMIT_S, 0.05) is not None:
            event.recovered = time.monotonic()

    def _restart(self, server: Server, event: Event) -> None:
        event.phases["drain"] = server.stop(timeout=RECOVERY_LIMIT_S)
        begun = time.monotonic()
        server.start()
        if server.wait_ready(RECOVERY_LIMIT_S) is not None:
            event.recovered = time.monotonic()
            event.phases["start"] = event.recovered - begun
