"""The proxy's request handler: check the target and token, forward upstream, relay, log, count."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from .auth import AuthError, token_from_header, verify_token
from .config import MIN_SECRET_BYTES, ProxyConfig
from .errors import error_response
from .forward import Upstream, error_kind, request_headers, response_headers
from .limits import TokenLimiter
from .metrics import Metrics
from .paths import target_problem
from .request_id import request_id_for

log = logging.getLogger("proxy")
access_log = logging.getLogger("proxy.access")

# RFC 6750 section 3: no error code when no bearer credentials were sent at all.
_CHALLENGE_ERROR = {"missing_header": "", "bad_scheme": "", "malformed": ', error="invalid_request"'}
RETRY_AFTER_S = 1  # streams end within seconds; a token over its limit can retry soon
DRAIN_RETRY_AFTER_S = 5  # long enough for a load balancer to move the client elsewhere
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

    def log_line(self) -> str:
        """The single access log line; never the token, the body or the query."""
        duration_ms = (time.monotonic() - self.started) * 1000
        return (f"request_id={self.request_id} team_id={self.team_id} token_id={self.token_id} "
                f"method={self.method} path={self.path} status={self.status} bytes={self.bytes} "
                f"duration_ms={duration_ms:.1f} outcome={self.outcome}")


class RequestError(Exception):
    """A request the proxy answers itself with a JSON error."""

    def __init__(self, status: int, message: str, outcome: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.outcome, self.close = status, message, outcome, close


class ProxyApp:
    """Everything one proxy process shares: settings, upstream session, limits, metrics, drain."""

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.upstream = Upstream(config.upstream_url, config.upstream_timeout_s)
        self.limiter = TokenLimiter(config.max_streams_per_token)
        self.metrics = Metrics()
        self.draining = False
        self.stopping = False  # the drain is over: handlers still running are being cut
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    async def start(self) -> None:
        """Open the upstream session; call from the serving event loop."""
        self._idle = asyncio.Event()
        self._idle.set()
        await self.upstream.start()

    async def close(self) -> None:
        """Close the upstream connections."""
        await self.upstream.close()

    def begin_drain(self) -> None:
        """From now on /health and new requests get 503; running ones go on."""
        self.draining = True

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        if self._idle is not None:  # None: not serving yet, so nothing can be in flight
            await self._idle.wait()

    # --- client-side events reported by the connection handler -------------------------------

    def header_timeout(self) -> None:
        """A client did not finish its request line and headers in time."""
        self.metrics.client_timeouts.labels("headers").inc()

    def bad_request(self, request: web.BaseRequest, status: int, message: str) -> None:
        """Log and count a request the HTTP parser refused (it never reaches handle())."""
        exchange = Exchange(request_id_for(None), "-", status=status, outcome="bad_request")
        self.metrics.requests.labels(str(status)).inc()
        access_log.info(exchange.log_line())

    # --- requests ------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request; the only entry point aiohttp calls."""
        exchange = Exchange(request_id_for(request.headers.get("X-Request-ID")), request.method)
        target = request.raw_path
        problem = target_problem(target)
        path = target.split("?", 1)[0]
        if problem is None and path == "/metrics":
            # Scrapes would drown the access log and skew the request counts.
            return self._metrics(request, exchange)
        self._enter()
        response = None
        try:
            if problem is not None:
                raise RequestError(400, problem, "bad_target")
            exchange.path = path[:256]  # validated: what the log shows is what was forwarded
            response = await self._route(request, exchange, target)
            return response
        except RequestError as err:
            exchange.outcome = err.outcome
            response = error_response(err.status, err.message)
            if err.close:
                response.force_close()
            return response
        except asyncio.CancelledError:
            # The client's connection closed (aiohttp cancels the handler at once), or the
            # drain ran out of time and the server is cutting what is left.
            if exchange.outcome == "ok":
                exchange.outcome = "shutdown" if self.stopping else "client_gone"
            raise
        except ConnectionError:
            raise  # a write to a client that has left (outcome set where it happened)
        except Exception:
            log.exception("request_id=%s failed", exchange.request_id)
            exchange.outcome = "error"
            if exchange.status:
                raise  # the answer has started: aiohttp drops the connection
            response = error_response(500, "internal proxy error")
            return response
        finally:
            if response is not None:
                if not response.prepared:  # a relayed answer had its headers set in _forward
                    self._own_headers(response, exchange)
                exchange.status = response.status
                if isinstance(response, web.Response) and response.body is not None:
                    exchange.bytes = len(response.body)
            if not exchange.status:
                exchange.status = CLIENT_CLOSED
            self.metrics.requests.labels(str(exchange.status)).inc()
            access_log.info(exchange.log_line())
            self._leave()

    # Gunicorn loads only callables; called, the app answers a request like handle().
    __call__ = handle

    def _own_headers(self, response: web.StreamResponse, exchange: Exchange) -> None:
        """What the proxy adds to every answer, before its headers are sent."""
        response.headers["X-Request-ID"] = exchange.request_id
        if self.draining:
            response.force_close()  # send kept-alive clients to another instance

    def _enter(self) -> None:
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def _metrics(self, request: web.BaseRequest, exchange: Exchange) -> web.StreamResponse:
        # No token: scrapers do not carry one and counts reveal no secrets (docs/proxy.md).
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, "the proxy's /metrics answers GET only",
                                      headers={"Allow": "GET, HEAD"})
        else:
            response = web.Response(body=self.metrics.render(),
                                    headers={"Content-Type": self.metrics.content_type})
        response.headers["X-Request-ID"] = exchange.request_id
        return response

    async def _route(self, request: web.BaseRequest, exchange: Exchange,
                     target: str) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and exchange.path == "/health":
            if self.draining:
                exchange.outcome = "draining"
                return error_response(503, "the proxy is shutting down",
                                      headers={"Retry-After": str(DRAIN_RETRY_AFTER_S)})
            # Load balancers probe without credentials; upstream's own readiness is the answer.
            return await self._forward(request, exchange, target, {}, b"")
        if self.draining:
            exchange.outcome = "draining"
            return error_response(503, "the proxy is shutting down; retry on another instance",
                                  headers={"Retry-After": str(DRAIN_RETRY_AFTER_S)})
        try:
            claims = verify_token(token_from_header(request.headers.get("Authorization")),
                                  self.config.jwt_secret, self.config.max_token_lifetime_s)
        except AuthError as err:
            return self._refuse(exchange, err)
        team_id, token_id = claims["team_id"], claims["token_id"]
        exchange.team_id, exchange.token_id = team_id, token_id
        body = await self._read_body(request)  # before taking a slot: may be refused
        key = (team_id, token_id)
        if not self.limiter.acquire(key):
            exchange.outcome = "over_limit"
            return error_response(429, f"this token already has {self.limiter.limit} requests "
                                  "in flight", headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            return await self._forward(request, exchange, target,
                                       {"X-Team-ID": team_id, "X-Token-ID": token_id}, body)
        finally:
            self.limiter.release(key)

    def _refuse(self, exchange: Exchange, err: AuthError) -> web.Response:
        self.metrics.auth_failures.labels(err.reason).inc()
        exchange.outcome = f"auth_{err.reason}"
        challenge = 'Bearer realm="inference-api"' + _CHALLENGE_ERROR.get(
            err.reason, ', error="invalid_token"')
        return error_response(401, err.message, headers={"WWW-Authenticate": challenge})

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The whole request body, within PROXY_MAX_BODY_BYTES and PROXY_BODY_TIMEOUT."""
        limit = self.config.max_body_bytes
        too_large = RequestError(413, f"request body is larger than {limit} bytes",
                                 "body_too_large", close=True)
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The token is good and the size fits: tell the client to send the body now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        parts, size = [], 0
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    parts.append(chunk)
        except TimeoutError:
            self.metrics.client_timeouts.labels("body").inc()
            raise RequestError(408, "the request body did not arrive within "
                               f"{self.config.body_timeout_s:g} s", "body_timeout",
                               close=True) from None
        except RequestPayloadError as exc:
            # e.g. a chunk size that is not hexadecimal, or a body cut short.
            cause = exc.__cause__ or exc
            detail = str(getattr(cause, "message", cause)).strip().splitlines() or ["bad syntax"]
            raise RequestError(400, f"malformed request body: {detail[0].rstrip(':')}",
                               "bad_body", close=True) from None
        return b"".join(parts)

    async def _forward(self, request: web.BaseRequest, exchange: Exchange, target: str,
                       identity: dict, body: bytes) -> web.StreamResponse:
        """Send the request upstream and relay its answer to the client as it arrives."""
        headers = request_headers(request.headers.items(), {
            **identity, "X-Request-ID": exchange.request_id,
            # The peer the proxy sees, never what the client claims (docs/proxy.md).
            "X-Forwarded-For": request.remote or "unknown", "X-Forwarded-Proto": request.scheme})
        try:
            answer = await self.upstream.send(request.method, target, headers, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return self._upstream_failed(exchange, exc)

        self.metrics.open_streams.inc()
        complete = False
        try:
            response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                          headers=response_headers(answer.headers.items()))
            if answer.content_length is not None:
                response.content_length = answer.content_length
            self._own_headers(response, exchange)
            # Headers go out now, before the first body byte: the client learns the status
            # while a non-streamed answer is still being generated.
            await response.prepare(request)
            request.writer.send_headers()
            exchange.status = response.status  # sent: a client leaving from here on saw it
            while True:
                try:
                    chunk = await answer.content.readany()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    self._upstream_broke(request, exchange, exc)
                    return response
                if not chunk:
                    break
                exchange.bytes += len(chunk)
                try:
                    # Waits only when the client's socket is full: it is not reading.
                    async with asyncio.timeout(self.config.send_timeout_s):
                        await response.write(chunk)
                except TimeoutError:
                    self._client_stalled(request, exchange)
                    return response
            await response.write_eof()
            complete = True
            return response
        except ConnectionError:
            # Upstream errors are handled above: this is a write to a client that has left.
            exchange.outcome = "client_gone"
            raise
        finally:
            self.metrics.open_streams.dec()
            if complete:
                answer.release()
            else:
                # Closing (not releasing) an unfinished answer drops the upstream connection,
                # which is how the API learns to cancel the generation.
                answer.close()

    def _client_stalled(self, request: web.BaseRequest, exchange: Exchange) -> None:
        """Drop a client that stopped reading, so that it no longer holds the API's row."""
        self.metrics.client_timeouts.labels("send").inc()
        exchange.outcome = "client_stalled"
        request.protocol.force_close()

    def _upstream_failed(self, exchange: Exchange, exc: BaseException) -> web.Response:
        """The JSON error for an upstream that gave no answer (its connection is closed)."""
        kind = error_kind(exc)
        self.metrics.upstream_errors.labels(kind).inc()
        exchange.outcome = f"upstream_{kind}"
        log.warning("request_id=%s upstream error (%s): %s", exchange.request_id, kind,
                    type(exc).__name__)
        if kind == "timeout":
            return error_response(504, "upstream did not answer within "
                                  f"{self.config.upstream_timeout_s:g} s")
        if kind == "connect":
            return error_response(502, "upstream is unavailable")
        return error_response(502, "upstream sent an invalid response")

    def _upstream_broke(self, request: web.BaseRequest, exchange: Exchange,
                        exc: BaseException) -> None:
        """Cut the client's stream: ending it normally would make a broken answer look whole."""
        kind = error_kind(exc)
        self.metrics.upstream_errors.labels(kind).inc()
        exchange.outcome = f"upstream_{kind}"  # with status 200: cut mid-stream
        log.warning("request_id=%s upstream stream broke (%s): %s", exchange.request_id, kind,
                    type(exc).__name__)
        # Closing the transport sends what was written, then FIN without the final chunk.
        request.protocol.force_close()


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
