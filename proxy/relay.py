"""Forwarding one request: send it to the API and relay the answer to the client as it arrives."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .drain import Drain
from .errors import upstream_failure
from .exchange import Exchange, own_headers
from .forward import UPSTREAM_ERRORS, Upstream, error_kind, request_headers, response_headers
from .metrics import Metrics
from .usage import UsageMeter

log = logging.getLogger("proxy")


class Relay:
    """Forwards requests over the shared Upstream and streams each answer back to its client."""

    def __init__(self, upstream: Upstream, metrics: Metrics, send_timeout_s: float, drain: Drain):
        self.upstream = upstream
        self.metrics = metrics
        self.send_timeout_s = send_timeout_s
        self.drain = drain

    async def forward(self, request: web.BaseRequest, exchange: Exchange, target: str,
                      identity: dict, body: bytes,
                      count_usage: bool = False) -> web.StreamResponse:
        """Send the request upstream and relay its answer to the client as it arrives;
        count_usage: meter the generated tokens of a successful answer on exchange.meter."""
        headers = request_headers(request.headers.items(), {
            **identity, "X-Request-ID": exchange.request_id,
            # The peer the proxy sees, never what the client claims (docs/proxy.md).
            "X-Forwarded-For": request.remote or "unknown", "X-Forwarded-Proto": request.scheme})
        try:
            answer = await self.upstream.send(request.method, target, headers, body)
        except UPSTREAM_ERRORS as exc:
            # No answer to relay: the proxy answers the client itself (502 or 504).
            kind = self._upstream_error(exchange, exc, "upstream error")
            raise upstream_failure(kind, self.upstream.idle_timeout_s) from None

        self.metrics.open_streams.inc()
        if count_usage and answer.status == 200:
            exchange.meter = UsageMeter(answer.headers.get("Content-Type", ""))
        complete = False
        try:
            response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                          headers=response_headers(answer.headers.items()))
            if answer.content_length is not None:
                response.content_length = answer.content_length
            own_headers(response, exchange, self.drain.draining)
            # Headers go out now, before the first body byte: the client learns the status
            # while a non-streamed answer is still being generated.
            await response.prepare(request)
            request.writer.send_headers()
            exchange.status = response.status  # sent: a client leaving from here on saw it
            while True:
                try:
                    chunk = await answer.content.readany()
                except UPSTREAM_ERRORS as exc:
                    self._upstream_broke(request, exchange, exc)
                    return response
                if not chunk:
                    break
                exchange.bytes += len(chunk)
                if exchange.meter is not None:
                    exchange.meter.feed(chunk)
                try:
                    # Waits only when the client's socket is full: it is not reading.
                    async with asyncio.timeout(self.send_timeout_s):
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
                # Its connection is pooled, or closed if the status is not reusable()
                # (forward.UpstreamAnswer), as soon as the last byte has arrived.
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

    def _upstream_broke(self, request: web.BaseRequest, exchange: Exchange,
                        exc: BaseException) -> None:
        """Cut the client's stream: ending it normally would make a broken answer look whole."""
        self._upstream_error(exchange, exc, "upstream stream broke")  # with status 200: cut
        # Closing the transport sends what was written, then FIN without the final chunk.
        request.protocol.force_close()

    def _upstream_error(self, exchange: Exchange, exc: BaseException, what: str) -> str:
        """Count, log and note on the exchange an upstream failure; returns its kind."""
        kind = error_kind(exc)
        self.metrics.upstream_errors.labels(kind).inc()
        exchange.outcome = f"upstream_{kind}"
        log.warning("request_id=%s %s (%s): %s", exchange.request_id, what, kind,
                    type(exc).__name__)
        return kind
