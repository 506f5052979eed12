"""The proxy's Flask app: authenticate, forward upstream, relay the stream, log and count."""
from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .auth import AuthError, token_from_header, verify_token
from .config import MIN_SECRET_BYTES, ProxyConfig
from .forward import Relay, Upstream, error_kind, request_headers, response_headers
from .limits import TokenLimiter
from .metrics import Metrics

log = logging.getLogger("proxy")
access_log = logging.getLogger("proxy.access")

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# A client's request id is kept only if it is safe to put in a log line and a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_PATH_SAFE = "/:@!$&'()*+,;=~"
# RFC 6750 section 3: no error code when no bearer credentials were sent at all.
_CHALLENGE_ERROR = {"missing_header": "", "bad_scheme": "", "malformed": ', error="invalid_request"'}
RETRY_AFTER_S = 1  # streams end within seconds; a token over its limit can retry soon


class RelayResponse(Response):
    """A response that adds no Content-Type of its own: the upstream's headers say it all."""

    default_mimetype = None


@dataclass
class Exchange:
    """One request as the access log sees it."""

    request_id: str
    method: str
    path: str
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


def create_app(config: ProxyConfig | None = None) -> Flask:
    """The proxy app for config (default: read from the environment)."""
    config = config if config is not None else ProxyConfig.from_env()
    _setup_logging()
    if config.secret_is_short:
        log.warning("JWT_SECRET is shorter than %d bytes: tokens can be brute-forced; "
                    "use a long random secret (e.g. `openssl rand -hex 32`)", MIN_SECRET_BYTES)

    app = Flask(__name__, static_folder=None)  # every path belongs to the upstream
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    # Paths are forwarded as sent: no slash merging or trailing-slash redirects.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    upstream = Upstream(config.upstream_url, config.upstream_timeout_s, pool_size=config.threads)
    limiter = TokenLimiter(config.max_streams_per_token)
    metrics = Metrics()

    @app.before_request
    def start_exchange():
        request_id = request.headers.get("X-Request-ID", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        g.exchange = Exchange(request_id, request.method, _target().split("?", 1)[0][:256])

    @app.after_request
    def finish_exchange(response: Response) -> Response:
        exchange: Exchange = g.exchange
        exchange.status = response.status_code
        response.headers["X-Request-ID"] = exchange.request_id
        if request.endpoint == "metrics":
            return response  # scrapes would drown the access log and skew the request counts
        metrics.requests.labels(str(response.status_code)).inc()
        if not isinstance(response.response, Relay):
            exchange.bytes = response.calculate_content_length() or 0
        # Runs after the last byte is sent (or the client left), so bytes and duration are final.
        response.call_on_close(lambda: access_log.info(exchange.log_line()))
        return response

    def refuse(err: AuthError) -> Response:
        metrics.auth_failures.labels(err.reason).inc()
        g.exchange.outcome = f"auth_{err.reason}"
        response = _error(401, err.message)
        response.headers["WWW-Authenticate"] = 'Bearer realm="inference-api"' + _CHALLENGE_ERROR.get(
            err.reason, ', error="invalid_token"')
        return response

    def forward(extra_headers: dict, body: bytes, on_done) -> Response:
        """Send this request upstream and answer with its response; on_done() runs exactly once."""
        exchange: Exchange = g.exchange
        headers = request_headers(request.headers.items(),
                                  {**extra_headers, "X-Request-ID": exchange.request_id})
        try:
            answer = upstream.send(request.method, _target(), headers, body)
        except requests.RequestException as exc:
            on_done()
            kind = error_kind(exc)
            metrics.upstream_errors.labels(kind).inc()
            exchange.outcome = f"upstream_{kind}"
            log.warning("request_id=%s upstream error (%s): %s", exchange.request_id, kind,
                        type(exc).__name__)
            if kind == "timeout":
                return _error(504, f"upstream did not answer within {config.upstream_timeout_s:g} s")
            if kind == "connect":
                return _error(502, "upstream is unavailable")
            return _error(502, "upstream sent an invalid response")
        except BaseException:
            on_done()
            raise

        metrics.open_streams.inc()

        def relay_closed(relay: Relay) -> None:
            metrics.open_streams.dec()
            on_done()
            exchange.bytes = relay.bytes
            if relay.error:
                metrics.upstream_errors.labels(relay.error).inc()
                exchange.outcome = f"upstream_{relay.error}"  # with status 200: cut mid-stream
            elif relay.started and not relay.finished:
                exchange.outcome = "client_gone"

        relay = Relay(answer, relay_closed)
        try:
            return RelayResponse(relay, status=answer.status_code,
                                 headers=response_headers(answer.raw.headers.items()))
        except BaseException:
            relay.close()
            raise

    @app.route("/health", methods=["GET", "HEAD"])
    def health():
        # Load balancers probe without credentials; upstream's own readiness is the answer.
        return forward({}, b"", on_done=lambda: None)

    @app.route("/metrics", methods=["GET"], endpoint="metrics")
    def metrics_route():
        # No token: scrapers do not carry one and counts reveal no secrets (docs/proxy.md).
        return Response(metrics.render(), content_type=metrics.content_type)

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def proxied(path: str):
        try:
            claims = verify_token(token_from_header(request.headers.get("Authorization")),
                                  config.jwt_secret)
        except AuthError as err:
            return refuse(err)
        team_id, token_id = claims["team_id"], claims["token_id"]
        g.exchange.team_id, g.exchange.token_id = team_id, token_id
        body = request.get_data(cache=False)  # read before taking a slot: may raise 413
        key = (team_id, token_id)
        if not limiter.acquire(key):
            g.exchange.outcome = "over_limit"
            response = _error(429, f"this token already has {limiter.limit} requests in flight")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        return forward({"X-Team-ID": team_id, "X-Token-ID": token_id}, body,
                       on_done=lambda: limiter.release(key))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if isinstance(err, RequestEntityTooLarge):
            return _error(413, f"request body is larger than {config.max_body_bytes} bytes")
        return _error(err.code or 500, err.description or err.name)

    @app.errorhandler(Exception)
    def unexpected_error(err: Exception):
        log.exception("request_id=%s failed", g.exchange.request_id if "exchange" in g else "-")
        return _error(500, "internal proxy error")

    return app


def _error(status: int, message: str) -> Response:
    """An error in the API's JSON shape."""
    response = jsonify({"status_code": status, "message": message})
    response.status_code = status
    return response


def _target() -> str:
    """Path and query exactly as the client sent them."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    if raw.startswith("/"):
        return raw
    # Servers that do not pass the raw target on: rebuild it from the decoded path.
    path = request.environ.get("SCRIPT_NAME", "") + request.environ.get("PATH_INFO", "")
    target = quote(path.encode("latin-1"), safe=_PATH_SAFE) or "/"
    query = request.environ.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


def _setup_logging() -> None:
    """Give the proxy's loggers a stderr handler unless the host application set one up."""
    if log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
