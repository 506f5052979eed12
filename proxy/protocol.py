"""The client side of the connection: aiohttp's HTTP/1.1 handler with deadlines for slow clients.

aiohttp's server closes idle keep-alive connections, but has no deadline for a client that
dribbles its request line and headers a byte at a time: such a client would hold its socket
forever. GuardedRequestHandler adds that deadline and answers malformed requests in the
proxy's JSON error shape instead of aiohttp's plain-text pages.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from .errors import RequestError, error_response, first_line

log = logging.getLogger("proxy")

# The request line (method, target, version) and each header line; JWTs make long headers.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 16384
MAX_HEADERS = 100


class GuardedRequestHandler(web_protocol.RequestHandler):
    """A RequestHandler that closes the connection when a request's headers take too long.

    The deadline is armed when the connection opens and, on a kept-alive connection, when
    the first byte of the next request arrives; it is disarmed once the request line and
    headers are complete. The body has its own deadline, in the proxy's handler.
    """

    __slots__ = ("_header_timeout", "_header_handle", "_on_header_timeout", "_on_bad_request")

    def __init__(self, manager: "ProxyServer", *, header_timeout: float,
                 on_header_timeout: Callable[[], None],
                 on_bad_request: Callable[[web.BaseRequest, int, str], None], **kwargs):
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_handle: asyncio.TimerHandle | None = None
        self._on_header_timeout = on_header_timeout
        self._on_bad_request = on_bad_request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_request():
            # Bytes of a request not parsed yet: the connection is receiving a request, not
            # idle, so the header deadline replaces aiohttp's keep-alive timer (which would
            # cut it at the idle limit). On a kept-alive connection this is the first byte
            # of the next request, and the deadline starts now.
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None
            if self._header_handle is None:
                self._arm_header_deadline()
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued and self._request_in_progress:
            self._fail_current_body()
        if self._messages:  # a complete request line and headers (or a parse error) is queued
            self._disarm_header_deadline()

    def _fail_current_body(self) -> None:
        """Hand a parse error in the body being read to its reader, not to a request of its own.

        aiohttp queues an error found after a request's headers as if it were the next
        request, and the handler reading the body would wait for bytes that never come.
        """
        message, _ = self._messages[-1]
        request = self._current_request
        if (not isinstance(message, web_protocol._ErrInfo) or request is None
                or request.content.is_eof()):
            return
        self._messages.pop()
        error = web_protocol.RequestPayloadError(message.message)
        error.__cause__ = message.exc
        request.content.set_exception(error)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _waiting_for_request(self) -> bool:
        return (not self._request_in_progress and not self._messages
                and self._waiter is not None and not self._waiter.done())

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_handle = self._loop.call_later(self._header_timeout, self._header_deadline)

    def _disarm_header_deadline(self) -> None:
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None

    def _header_deadline(self) -> None:
        self._header_handle = None
        if self.transport is None or self._messages or self._request_in_progress:
            return
        # No answer is sent: the client has not finished a request to answer.
        self._on_header_timeout()
        self.force_close()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        """The JSON error for a request aiohttp could not parse, or that failed unexpectedly."""
        if request.writer.output_size > 0:
            # Part of the answer is out: there is no way to send an error any more.
            raise ConnectionError("the response had started; dropping the connection")
        if isinstance(exc, LineTooLong) and exc.args[1:2] == (MAX_LINE_BYTES,):
            status, message = 414, f"the request line is longer than {MAX_LINE_BYTES} bytes"
        elif isinstance(exc, LineTooLong) or (
                isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower()):
            status, message = 431, (f"request headers are too large: at most {MAX_HEADERS} "
                                    f"headers of {MAX_FIELD_BYTES} bytes each")
        elif status == 500:
            # Only before a request reaches the proxy's handler, which answers its own errors.
            log.error("unexpected error handling a request", exc_info=exc)
            message = "internal proxy error"
        elif isinstance(exc, BadHttpMessage):
            message = f"malformed request: {first_line(exc.message)}"
        else:
            message = message or "malformed request"
        # After a parse error the rest of the stream means nothing. An unparsed request has
        # aiohttp's placeholder path "/", so it gets the native shape: its path is unknown.
        response = error_response(RequestError(status, message, "bad_request", close=True),
                                  request.raw_path)
        self._on_bad_request(request, status, message)
        return response


class ProxyServer(web.Server):
    """aiohttp's low-level server, making GuardedRequestHandlers for its connections."""

    def __init__(self, handler, *, header_timeout: float, on_header_timeout: Callable[[], None],
                 on_bad_request: Callable[[web.BaseRequest, int, str], None], **kwargs):
        super().__init__(handler, max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES,
                         max_headers=MAX_HEADERS, **kwargs)
        self._guard = {"header_timeout": header_timeout, "on_header_timeout": on_header_timeout,
                       "on_bad_request": on_bad_request}

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._guard, **self._kwargs)
