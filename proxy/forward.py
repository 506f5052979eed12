"""The upstream hop: which headers cross it, and one pooled aiohttp ClientSession to the API."""
from __future__ import annotations

import asyncio
from typing import Iterable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade"})
# Whatever a client claims about the path to it is unverifiable: the proxy says it itself.
CLIENT_CLAIMS = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-host",
                           "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix",
                           "x-real-ip"})
# Request headers the proxy replaces or that the HTTP client recomputes for the upstream hop.
NOT_FORWARDED = HOP_BY_HOP | CLIENT_CLAIMS | {
    "host", "authorization", "x-api-key", "content-length", "expect", "accept-encoding",
    "x-team-id", "x-token-id", "x-request-id"}
# The proxy's own server writes these for the client hop.
NOT_RETURNED = HOP_BY_HOP | {"date", "server", "x-request-id", "content-length"}
# Connecting should take milliseconds on the API's network; a refused or dropped SYN is an outage.
CONNECT_TIMEOUT_S = 5.0
# Idle pooled connections are dropped before the API's own keep-alive (5 s) closes them, so a
# request is never sent on a connection the API is closing at that moment.
UPSTREAM_IDLE_S = 3.0
# What a request on the upstream hop can raise: the API is down, silent, or broke the answer.
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _connection_listed(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names a Connection header declares hop-by-hop."""
    names = set()
    for name, value in headers:
        if name.lower() == "connection":
            names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def request_headers(headers: Iterable[tuple[str, str]], extra: dict[str, str]) -> CIMultiDict:
    """The client's headers minus hop-by-hop, credentials and forwarding claims; plus ours."""
    headers = list(headers)
    drop = NOT_FORWARDED | _connection_listed(headers)
    out = CIMultiDict((name, value) for name, value in headers if name.lower() not in drop)
    # Identity keeps the body bytes as the upstream sent them: nothing to decode or re-encode.
    out["Accept-Encoding"] = "identity"
    out.update(extra)
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> CIMultiDict:
    """The upstream's response headers minus hop-by-hop ones, repeated headers kept."""
    headers = list(headers)
    drop = NOT_RETURNED | _connection_listed(headers)
    return CIMultiDict((name, value) for name, value in headers if name.lower() not in drop)


def error_kind(exc: BaseException) -> str:
    """The metric label of an upstream failure."""
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        # Connect timeouts are ServerTimeoutErrors too: nothing accepted the connection.
        return "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"  # refused or unreachable: the upstream is down, not slow
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return "stream"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "other"  # e.g. a malformed status line or headers
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return "stream"
    return "other"


def reusable(status: int) -> bool:
    """Whether an upstream connection may carry another request after an answer with status."""
    # The API may answer an error before it has read the request's body: a 413 from the
    # Content-Length, a 404 for an unknown model, a worker failing mid-read. The proxy cannot
    # tell, and bytes left unread would be parsed as the start of the next request on that
    # connection, perhaps another client's. A new connection to the API costs far less.
    return status < 400


class UpstreamAnswer(aiohttp.ClientResponse):
    """An answer whose connection is closed, never pooled, unless its status is reusable()."""

    async def start(self, connection: aiohttp.connector.Connection) -> "UpstreamAnswer":
        """Read the status and headers, and mark the connection if it is not to be reused."""
        protocol = connection.protocol
        await super().start(connection)
        # Nothing is awaited from here on: no other request can take the connection first.
        if protocol is not None and not reusable(self.status):
            # aiohttp returns the connection to the pool when the answer's last byte arrives;
            # marked, the pool closes it instead.
            protocol.force_close()
            if self.connection is None:
                protocol.close()  # the last byte came with the headers: it is pooled already
        return self


class Upstream:
    """The API server behind the proxy, reached over one pooled ClientSession."""

    def __init__(self, base_url: str, idle_timeout_s: float):
        self.base_url = base_url
        self.idle_timeout_s = idle_timeout_s
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session; call from the event loop that will use it."""
        # sock_read is the idle timeout: it runs while waiting for the headers and again
        # between two reads of the body, never over the whole answer.
        timeout = aiohttp.ClientTimeout(total=None, connect=None,
                                        sock_connect=min(CONNECT_TIMEOUT_S, self.idle_timeout_s),
                                        sock_read=self.idle_timeout_s)
        self.session = aiohttp.ClientSession(
            # limit=0: the proxy admits requests itself; a pool cap would only queue them.
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10,
                                           keepalive_timeout=UPSTREAM_IDLE_S),
            timeout=timeout,
            # One session serves every client: a cookie kept from one answer must never
            # reach another client. Set-Cookie still goes back to the client that got it.
            cookie_jar=aiohttp.DummyCookieJar(),
            # No proxies or .netrc credentials from the environment on the upstream hop.
            trust_env=False,
            auto_decompress=False,
            # No aiohttp User-Agent: the client's own headers are forwarded as they are.
            skip_auto_headers=("User-Agent",),
            # Keeps a connection out of the pool after an answer that may have left it unclean.
            response_class=UpstreamAnswer,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        if self.session is not None:
            await self.session.close()

    async def send(self, method: str, target: str, headers: CIMultiDict,
                   body: bytes) -> aiohttp.ClientResponse:
        """Send one request; returns once the upstream's status and headers have arrived."""
        assert self.session is not None, "Upstream.start() was not awaited"
        # encoded=True: the target goes out exactly as validated, never re-quoted or normalised.
        url = URL(self.base_url + target, encoded=True)
        return await self.session.request(method, url, headers=headers, data=body or None,
                                          allow_redirects=False, compress=None)
