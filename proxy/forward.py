"""Sending a request upstream over a pooled session and relaying the answer chunk by chunk."""
from __future__ import annotations

import errno
from http.cookiejar import DefaultCookiePolicy
from typing import Callable, Iterable, Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade"})
# Request headers the proxy replaces or that the HTTP client recomputes for the upstream hop.
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "content-length", "expect",
                              "accept-encoding", "x-team-id", "x-token-id", "x-request-id"}
# The proxy's own server writes these for the client hop.
NOT_RETURNED = HOP_BY_HOP | {"date", "server", "x-request-id"}


def _connection_listed(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names a Connection header declares hop-by-hop."""
    names = set()
    for name, value in headers:
        if name.lower() == "connection":
            names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def request_headers(headers: Iterable[tuple[str, str]], extra: dict[str, str]) -> dict[str, str]:
    """The client's headers minus hop-by-hop and credentials, plus the proxy's own."""
    headers = list(headers)
    drop = NOT_FORWARDED | _connection_listed(headers)
    out = {name: value for name, value in headers if name.lower() not in drop}
    # Identity keeps the body bytes as the upstream sent them, so iter_content decodes nothing.
    out["Accept-Encoding"] = "identity"
    out.update(extra)
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers minus hop-by-hop ones, repeated headers kept."""
    headers = list(headers)
    drop = NOT_RETURNED | _connection_listed(headers)
    return [(name, value) for name, value in headers if name.lower() not in drop]


def error_kind(exc: requests.RequestException) -> str:
    """The metric label of an upstream failure."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect"  # nothing accepted the connection: the upstream is down, not slow
    if isinstance(exc, requests.Timeout) or (exc.args and isinstance(exc.args[0], ReadTimeoutError)):
        return "timeout"  # mid-stream read timeouts arrive wrapped in a ConnectionError
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return "stream"
    if isinstance(exc, requests.ConnectionError):
        return "connect"
    return "other"


class Upstream:
    """The API server behind the proxy, reached over one pooled requests.Session."""

    def __init__(self, base_url: str, timeout_s: float, pool_size: int):
        self.base_url = base_url
        # Connecting should take milliseconds; the full timeout is for the answer's headers.
        self.timeout = (min(5.0, timeout_s), timeout_s)
        self.session = requests.Session()
        # No proxies or .netrc credentials from the environment on the upstream hop.
        self.session.trust_env = False
        self.session.headers.clear()  # no python-requests User-Agent or Accept defaults
        # One session serves every client: a cookie kept from one answer must not reach
        # another client's request. Set-Cookie still goes back to the client that got it.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, method: str, target: str, headers: dict, body: bytes) -> requests.Response:
        """Send one request; returns once the upstream's status and headers have arrived."""
        return self.session.request(method, self.base_url + target, headers=headers,
                                    data=body or None, stream=True, timeout=self.timeout,
                                    allow_redirects=False)


class Relay:
    """An upstream body as a WSGI iterable: each chunk is passed on as it arrives.

    close() closes the upstream connection unless the body was read to the end, so a
    client that goes away mid-stream cancels the generation upstream.
    """

    def __init__(self, response: requests.Response, on_close: Callable[["Relay"], None]):
        self.response = response
        self.bytes = 0
        self.started = False
        self.finished = False
        self.error: str | None = None
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                if chunk:
                    self.bytes += len(chunk)
                    yield chunk
        except requests.RequestException as exc:
            self.error = error_kind(exc)
            # Ending normally would send the final empty chunk and make a cut stream look
            # complete; a reset makes the server drop the client connection instead.
            raise ConnectionResetError(errno.ECONNRESET, "upstream stream broke") from exc
        self.finished = True

    def close(self) -> None:
        """Release the upstream connection (closing it if unread) and report once."""
        if self._closed:
            return
        self._closed = True
        self.response.close()
        self._on_close(self)
