"""The proxy app: the factory, and the route of one request from its target to its log line."""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import unquote

from aiohttp import web

from common.request_id import request_id_for

from .access import check_model_access
from .auth import AuthError, token_of_request, verify_token
from .body import read_body
from .claims import TokenPolicy, policy_of
from .config import MIN_SECRET_BYTES, ProxyConfig
from .drain import Drain
from .errors import (RequestError, error_response, internal_error, is_anthropic_path, over_limit,
                     shutting_down, unauthorized)
from .exchange import Exchange, own_headers, record
from .forward import Upstream
from .limits import TokenLimiter
from .metrics import Metrics
from .rate_store import MemoryRateStore
from .ratelimit import Admission, RateLimiter
from .paths import target_problem
from .relay import Relay
from .static import StaticFiles, is_static_path

log = logging.getLogger("proxy")


class ProxyApp:
    """Everything one proxy process shares: settings, upstream session, limits, metrics, drain."""

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.upstream = Upstream(config.upstream_url, config.upstream_timeout_s)
        self.limiter = TokenLimiter(config.max_streams_per_token)
        self.metrics = Metrics()
        self.rate_limiter = RateLimiter(MemoryRateStore(), config.rate_limit_rpm,
                                        config.rate_limit_tpm, config.rate_limit_window_s)
        self.drain = Drain()
        self.relay = Relay(self.upstream, self.metrics, config.send_timeout_s, self.drain)
        self.static = StaticFiles()

    async def start(self) -> None:
        """Open the upstream session; call from the serving event loop."""
        self.drain.start()
        await self.upstream.start()

    async def close(self) -> None:
        """Close the upstream connections."""
        await self.upstream.close()

    # --- client-side events reported by the connection handler -------------------------------

    def header_timeout(self) -> None:
        """A client did not finish its request line and headers in time."""
        self.metrics.client_timeouts.labels("headers").inc()

    def bad_request(self, request: web.BaseRequest, status: int, message: str) -> None:
        """Log and count a request the HTTP parser refused (it never reaches handle())."""
        record(Exchange(request_id_for(None), "-", status=status, outcome="bad_request"),
               self.metrics)

    # --- requests ------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request; the only entry point aiohttp calls."""
        exchange = Exchange(request_id_for(request.headers.get("X-Request-ID")), request.method)
        target = request.raw_path
        problem = target_problem(target)
        path = target.split("?", 1)[0]
        self.drain.enter()
        response = None
        try:
            if is_static_path(path):
                # Before the target check: under /static/ every other spelling, dot segments
                # included, is simply not one of the page's files (404).
                exchange.path = path[:256] if problem is None else "-"
                response = await self.static.answer(request, path)
                return response
            if problem is not None:
                raise RequestError(400, problem, "bad_target")
            if unquote(path) == "/metrics":  # /%6detrics too: the API's router decodes it
                # Never forwarded (the API's own /metrics is not for clients either), and the
                # proxy's is served on its metrics port only (docs/proxy.md, "Metrics").
                exchange.path = path
                raise RequestError(404, "no such path: metrics are served on the operators' "
                                   "port only", "not_found")
            exchange.path = path[:256]  # validated: what the log shows is what was forwarded
            response = await self._route(request, exchange, target)
            return response
        except RequestError as err:
            exchange.outcome = err.outcome
            response = error_response(err, target)
            return response
        except asyncio.CancelledError:
            # The client's connection closed (aiohttp cancels the handler at once), or the
            # drain ran out of time and the server is cutting what is left.
            if exchange.outcome == "ok":
                exchange.outcome = "shutdown" if self.drain.stopping else "client_gone"
            raise
        except ConnectionError:
            raise  # a write to a client that has left (outcome set where it happened)
        except Exception:
            log.exception("request_id=%s failed", exchange.request_id)
            exchange.outcome = "error"
            if exchange.status:
                raise  # the answer has started: aiohttp drops the connection
            response = error_response(internal_error(), target)
            return response
        finally:
            if response is not None:
                if not response.prepared:  # a relayed answer had its headers set in Relay
                    own_headers(response, exchange, self.drain.draining)
                exchange.answered(response)
            record(exchange, self.metrics)
            self.drain.leave()

    # Gunicorn loads only callables; called, the app answers a request like handle().
    __call__ = handle

    async def handle_metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer a request on the metrics port (PROXY_METRICS_PORT): GET /metrics, else 404."""
        # No token: the port is reachable by operators only. Scrapes are not logged or counted:
        # they would drown the access log and skew the request counts.
        target = request.raw_path
        if target.split("?", 1)[0] != "/metrics":
            response = error_response(RequestError(404, "this port serves /metrics only",
                                                   "not_found"), target)
        elif request.method not in ("GET", "HEAD"):
            response = error_response(
                RequestError(405, "the proxy's /metrics answers GET only", "bad_method",
                             headers={"Allow": "GET, HEAD"}), target)
        else:
            response = web.Response(body=self.metrics.render(),
                                    headers={"Content-Type": self.metrics.content_type})
        response.headers["X-Request-ID"] = request_id_for(request.headers.get("X-Request-ID"))
        return response

    async def _route(self, request: web.BaseRequest, exchange: Exchange,
                     target: str) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and exchange.path == "/health":
            if self.drain.draining:
                raise shutting_down("the proxy is shutting down")
            # Load balancers probe without credentials; upstream's own readiness is the answer.
            return await self.relay.forward(request, exchange, target, {}, b"")
        if self.drain.draining:
            raise shutting_down("the proxy is shutting down; retry on another instance")
        try:
            token = token_of_request(request.headers.get("Authorization"),
                                     request.headers.get("x-api-key"), is_anthropic_path(target))
            claims = verify_token(token, self.config.jwt_secret, self.config.max_token_lifetime_s)
        except AuthError as err:
            self.metrics.auth_failures.labels(err.reason).inc()
            raise unauthorized(err.reason, err.message) from None
        team_id, token_id = claims["team_id"], claims["token_id"]
        exchange.team_id, exchange.token_id = team_id, token_id
        # Read before taking a slot: the body may still be refused.
        body = await read_body(request, self.config.max_body_bytes, self.config.body_timeout_s,
                               self.metrics)
        policy = policy_of(claims)
        check_model_access(policy, request.method, target, body)
        # Claims are visible ASCII without spaces: the space keeps the key unambiguous.
        admission = await self._admit(f"{team_id} {token_id}", policy)
        if admission is not None:
            exchange.headers.update(admission.headers())
        key = (team_id, token_id)
        if not self.limiter.acquire(key):
            raise over_limit(self.limiter.limit)
        try:
            return await self.relay.forward(
                request, exchange, target, {"X-Team-ID": team_id, "X-Token-ID": token_id}, body,
                count_usage=admission is not None and admission.counts_tokens)
        finally:
            self.limiter.release(key)
            if admission is not None and exchange.meter is not None:
                # Also when the client left mid-answer: the tokens were generated all the same.
                await self.rate_limiter.count_tokens(admission, exchange.meter.tokens())

    async def _admit(self, key: str, policy: TokenPolicy) -> Admission | None:
        try:
            return await self.rate_limiter.admit(key, policy)
        except RequestError as err:
            self.metrics.rate_limited.labels(err.outcome.removeprefix("rate_limited_")).inc()
            raise


def create_app(config: ProxyConfig | None = None) -> ProxyApp:
    """The proxy app for config (default: read from the environment)."""
    config = config if config is not None else ProxyConfig.from_env()
    setup_logging()
    if config.secret_is_short:
        log.warning("JWT_SECRET is shorter than %d bytes: tokens can be brute-forced; "
                    "use a long random secret (e.g. `openssl rand -hex 32`)", MIN_SECRET_BYTES)
    return ProxyApp(config)


def setup_logging() -> None:
    """Give the proxy's loggers a stderr handler unless the host application set one up."""
    if log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
