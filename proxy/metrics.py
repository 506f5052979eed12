"""Prometheus counters of the proxy, in a registry of their own per app."""
from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               generate_latest)

AUTH_REASONS = ("missing_header", "bad_scheme", "malformed", "bad_algorithm", "bad_signature",
                "expired", "not_yet_valid", "lifetime", "missing_claim", "bad_claim", "invalid")
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "stream", "other")
CLIENT_TIMEOUT_PHASES = ("headers", "body", "send")


class Metrics:
    """Requests by status, auth failures by reason, upstream errors by kind, slow clients cut."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        # A registry per app, so that several apps in one process do not collide.
        self.registry = CollectorRegistry()
        self.requests = Counter("proxy_requests", "Requests answered, by HTTP status",
                                ["status"], registry=self.registry)
        self.auth_failures = Counter("proxy_auth_failures", "Requests refused with 401, by reason",
                                     ["reason"], registry=self.registry)
        self.upstream_errors = Counter("proxy_upstream_errors",
                                       "Upstream failures: connect (502), timeout (504 or cut "
                                       "stream), stream (broken mid-stream), other",
                                       ["kind"], registry=self.registry)
        self.client_timeouts = Counter("proxy_client_timeouts",
                                       "Client connections closed for being too slow to send "
                                       "their request headers or body, or to read the answer",
                                       ["phase"], registry=self.registry)
        self.rate_limited = Counter("proxy_rate_limited",
                                    "Requests refused with 429 by a per-token rate limit, by "
                                    "the limit reached: requests or tokens",
                                    ["limit"], registry=self.registry)
        self.open_streams = Gauge("proxy_open_responses", "Responses being relayed right now",
                                  registry=self.registry)
        # Listed up front so that a scrape shows 0 rather than nothing.
        for reason in AUTH_REASONS:
            self.auth_failures.labels(reason)
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind)
        for phase in CLIENT_TIMEOUT_PHASES:
            self.client_timeouts.labels(phase)
        for limit in ("requests", "tokens"):
            self.rate_limited.labels(limit)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
