"""One request as the proxy accounts for it: its access log line and its count by status."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from .metrics import Metrics
from .usage import UsageMeter

access_log = logging.getLogger("proxy.access")

CLIENT_CLOSED = 499  # log and metric status of a request whose client left before any answer


@dataclass
class Exchange:
    """One request as the access log sees it."""

    request_id: str
    method: str
    path: str = "-"
    started: float = field(default_factory=time.monotonic)
    team_id: str = "-"
    token_id: str = "-"
    status: int = 0
    bytes: int = 0
    outcome: str = "ok"
    # Headers the proxy adds to this answer (the token's x-ratelimit-* ones).
    headers: dict = field(default_factory=dict)
    # Counts the answer's generated tokens while it is relayed, when a token limit applies.
    meter: UsageMeter | None = None

    def answered(self, response: web.StreamResponse) -> None:
        """Take the status, and the size of a body the proxy made itself, from the answer."""
        self.status = response.status
        if isinstance(response, web.Response) and response.body is not None:
            self.bytes = len(response.body)

    def log_line(self) -> str:
        """The single access log line; never the token, the body or the query."""
        duration_ms = (time.monotonic() - self.started) * 1000
        return (f"request_id={self.request_id} team_id={self.team_id} token_id={self.token_id} "
                f"method={self.method} path={self.path} status={self.status} bytes={self.bytes} "
                f"duration_ms={duration_ms:.1f} outcome={self.outcome}")


def own_headers(response: web.StreamResponse, exchange: Exchange, draining: bool) -> None:
    """What the proxy adds to every answer, before its headers are sent."""
    response.headers["X-Request-ID"] = exchange.request_id
    response.headers.update(exchange.headers)
    if draining:
        response.force_close()  # send kept-alive clients to another instance


def record(exchange: Exchange, metrics: Metrics) -> None:
    """Count the finished exchange by status and write its access log line."""
    if not exchange.status:
        exchange.status = CLIENT_CLOSED
    metrics.requests.labels(str(exchange.status)).inc()
    access_log.info(exchange.log_line())
