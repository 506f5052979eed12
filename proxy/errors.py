"""Errors the proxy makes itself, all in the API's JSON shape."""
from __future__ import annotations

import json

from aiohttp import web

RETRY_AFTER_S = 1  # streams end within seconds; a token over its limit can retry soon
DRAIN_RETRY_AFTER_S = 5  # long enough for a load balancer to move the client elsewhere
# RFC 6750 section 3: no error code when no bearer credentials were sent at all.
_CHALLENGE_ERROR = {"missing_header": "", "bad_scheme": "", "malformed": ', error="invalid_request"'}


class RequestError(Exception):
    """A request the proxy answers itself with a JSON error."""

    def __init__(self, status: int, message: str, outcome: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.outcome, self.close = status, message, outcome, close


def error_response(status: int, message: str, headers: dict | None = None) -> web.Response:
    """`{"status_code": N, "message": "..."}` with status N."""
    body = json.dumps({"status_code": status, "message": message}).encode()
    return web.Response(status=status, body=body, content_type="application/json",
                        headers=headers)


def unauthorized(reason: str, message: str) -> web.Response:
    """The 401 for a refused token, with the Bearer challenge its reason calls for."""
    challenge = 'Bearer realm="inference-api"' + _CHALLENGE_ERROR.get(
        reason, ', error="invalid_token"')
    return error_response(401, message, headers={"WWW-Authenticate": challenge})


def shutting_down(message: str) -> web.Response:
    """The 503 of a draining proxy."""
    return error_response(503, message, headers={"Retry-After": str(DRAIN_RETRY_AFTER_S)})


def over_limit(limit: int) -> web.Response:
    """The 429 for a token that already has `limit` requests in flight."""
    return error_response(429, f"this token already has {limit} requests in flight",
                          headers={"Retry-After": str(RETRY_AFTER_S)})


def upstream_failure(kind: str, timeout_s: float) -> web.Response:
    """The 502 or 504 for an upstream that gave no answer, by error_kind()."""
    if kind == "timeout":
        return error_response(504, f"upstream did not answer within {timeout_s:g} s")
    if kind == "connect":
        return error_response(502, "upstream is unavailable")
    return error_response(502, "upstream sent an invalid response")


def first_line(text: object) -> str:
    """aiohttp's parser messages add a picture of the bad bytes on later lines: keep the words."""
    lines = str(text).strip().splitlines()
    return lines[0].rstrip(":") if lines else "bad syntax"
