"""What the soak watches while it runs: each process's memory and open files, and each API's
/health (row bookkeeping faults must never appear); and at the end, whether everything let go."""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import psutil

from hostile.stack import get_health, wait_until

from .stack import SoakStack

SAMPLE_EVERY_S = 2.0


@dataclass
class Sample:
    at: float
    role: str
    pid: int
    rss: int  # bytes
    fds: int


class Watch:
    """Samples the stack's processes and health in a thread until stopped."""

    def __init__(self, stack: SoakStack):
        self.stack = stack
        self.samples: list[Sample] = []
        self.faults: list[str] = []  # row bookkeeping faults seen in /health, with when
        self.health_polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        for role, process in self.stack.processes().items():
            try:
                with process.oneshot():
                    self.samples.append(Sample(now, role, process.pid,
                                               process.memory_info().rss, process.num_fds()))
            except psutil.Error:
                continue  # it ended while we looked (a restart under way)
        for api in self.stack.apis:
            status, body = get_health(api.url)
            if status == 200:
                self.health_polls += 1
                if body.get("row_faults"):
                    self.faults.append(f"{api.name}: {body['row_faults']}")
                if body.get("cached_rows", 0) + body.get("busy_rows", 0) > body["max_users"]:
                    self.faults.append(f"{api.name}: more rows in use than exist: {body}")


def wait_idle(stack: SoakStack, timeout: float) -> tuple[bool, list[dict]]:
    """Whether every API comes to no busy row, waiting prompt or open session within timeout;
    with each API's last /health."""
    last: list[dict] = []

    def idle() -> bool:
        last[:] = [get_health(api.url)[1] for api in stack.apis]
        return all(h and h["busy_rows"] == h["queued"] == h["sessions"] == 0 and not h[
            "row_faults"] for h in last)

    return wait_until(idle, timeout, 0.5) is not None, last


@dataclass
class Growth:
    """A process's memory and open files from its baseline to the end of the run."""

    role: str
    pid: int
    rss_before: int
    rss_after: int
    fds_before: int
    fds_after: int
    covered_s: float  # the seconds between the two samples

    @property
    def rss_growth_mb(self) -> float:
        return (self.rss_after - self.rss_before) / 2 ** 20


def growth(samples: list[Sample], warm_at: float, settle_s: float) -> list[Growth]:
    """Per process alive at the last sample: its first sample once warm (after warm_at, and
    settle_s after a restarted process first showed) against its last sample. A process that
    ended during the run (killed, or restarted) is left out: its last samples are of its exit."""
    last = max((s.at for s in samples), default=0.0)
    alive = {s.pid for s in samples if s.at == last}
    by_pid: dict[int, list[Sample]] = {}
    for sample in samples:
        if sample.pid in alive:
            by_pid.setdefault(sample.pid, []).append(sample)
    found = []
    for pid, seen in by_pid.items():
        start = max(warm_at, seen[0].at + (settle_s if seen[0].at > warm_at else 0.0))
        warm = [s for s in seen if s.at >= start]
        if len(warm) < 2:
            continue
        first, last = warm[0], warm[-1]
        found.append(Growth(first.role, pid, first.rss, last.rss, first.fds, last.fds,
                            last.at - first.at))
    return sorted(found, key=lambda g: (g.role, g.covered_s))


def median_and_worst(values: list[float]) -> tuple[float, float] | None:
    return (statistics.median(values), max(values)) if values else None
