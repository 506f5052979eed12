"""The client's request body, read in full within the size limit and the body deadline."""
from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from .errors import RequestError, first_line
from .metrics import Metrics


async def read_body(request: web.BaseRequest, limit: int, timeout_s: float,
                    metrics: Metrics) -> bytes:
    """The whole request body, within PROXY_MAX_BODY_BYTES and PROXY_BODY_TIMEOUT."""
    too_large = RequestError(413, f"request body is larger than {limit} bytes",
                             "body_too_large", close=True)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    if request.headers.get("Expect", "").lower() == "100-continue":
        # The token is good and the size fits: tell the client to send the body now.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    parts, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise too_large
                parts.append(chunk)
    except TimeoutError:
        metrics.client_timeouts.labels("body").inc()
        raise RequestError(408, f"the request body did not arrive within {timeout_s:g} s",
                           "body_timeout", close=True) from None
    except RequestPayloadError as exc:
        # e.g. a chunk size that is not hexadecimal, or a body cut short.
        cause = exc.__cause__ or exc
        raise RequestError(400, f"malformed request body: "
                           f"{first_line(getattr(cause, 'message', cause))}",
                           "bad_body", close=True) from None
    return b"".join(parts)
