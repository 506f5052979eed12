"""Errors the proxy makes itself, in the shape the API gives on the same path."""
from __future__ import annotations

import json
from urllib.parse import unquote

from aiohttp import web

RETRY_AFTER_S = 1  # streams end within seconds; a token over its limit can retry soon
DRAIN_RETRY_AFTER_S = 5  # long enough for a load balancer to move the client elsewhere
# RFC 6750 section 3: no error code when no bearer credentials were sent at all.
_CHALLENGE_ERROR = {"missing_header": "", "bad_scheme": "", "malformed": ', error="invalid_request"'}


class RequestError(Exception):
    """A request the proxy answers itself: status, message, log outcome, headers, OpenAI code."""

    def __init__(self, status: int, message: str, outcome: str, close: bool = False,
                 headers: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.outcome, self.close = status, message, outcome, close
        self.headers, self.code = headers or {}, code


def error_response(error: RequestError, target: str) -> web.Response:
    """The JSON answer to error, in the shape of target's path."""
    body = json.dumps(error_body(error, target)).encode()
    response = web.Response(status=error.status, body=body, content_type="application/json",
                            headers=error.headers)
    if error.close:
        response.force_close()
    return response


def error_body(error: RequestError, target: str) -> dict:
    """OpenAI's `{"error": {...}}` under /v1/ (Anthropic's `{"type": "error", "error": {...}}`
    under /v1/messages), else the native `{"status_code", "message"}`."""
    if not is_openai_path(target):
        return {"status_code": error.status, "message": error.message}
    if is_anthropic_path(target):
        return {"type": "error", "error": {"type": anthropic_error_type(error.status),
                                           "message": error.message}}
    return {"error": {"message": error.message, "type": error_type(error.status),
                      "param": None, "code": error.code}}


def is_openai_path(target: str) -> bool:
    """Whether the API answers target's errors in OpenAI's shape (its path is under /v1/)."""
    # Decoded, as the API's router sees it: /%761/models reaches the API's /v1/models.
    return unquote(target.split("?", 1)[0]).startswith("/v1/")


def is_anthropic_path(target: str) -> bool:
    """Whether target is Anthropic's Messages API, which the API answers in Anthropic's shape."""
    path = unquote(target.split("?", 1)[0])
    return path == "/v1/messages" or path.startswith("/v1/messages/")


# Anthropic's error types by status (the API's own mapping; it says "overloaded" for 503).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 503: "overloaded_error"}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error `type` for status."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_type(status: int) -> str:
    """OpenAI's `type` for status: the API's own mapping, plus 429, which only the proxy gives."""
    if status == 429:
        return "rate_limit_exceeded"
    if status >= 500:
        return "server_error"
    if status == 401:
        return "authentication_error"
    return "invalid_request_error"


def unauthorized(reason: str, message: str) -> RequestError:
    """The 401 for a refused token, with the Bearer challenge its reason calls for."""
    challenge = 'Bearer realm="inference-api"' + _CHALLENGE_ERROR.get(
        reason, ', error="invalid_token"')
    return RequestError(401, message, f"auth_{reason}", headers={"WWW-Authenticate": challenge},
                        code="invalid_api_key")


def shutting_down(message: str) -> RequestError:
    """The 503 of a draining proxy; `unavailable` is the API's code for its own shutdown."""
    return RequestError(503, message, "draining",
                        headers={"Retry-After": str(DRAIN_RETRY_AFTER_S)}, code="unavailable")


def over_limit(limit: int) -> RequestError:
    """The 429 for a token that already has `limit` requests in flight."""
    return RequestError(429, f"this token already has {limit} requests in flight", "over_limit",
                        headers={"Retry-After": str(RETRY_AFTER_S)}, code="rate_limit_exceeded")


def upstream_failure(kind: str, timeout_s: float) -> RequestError:
    """The 502 or 504 for an upstream that gave no answer, by error_kind()."""
    outcome = f"upstream_{kind}"
    if kind == "timeout":
        return RequestError(504, f"upstream did not answer within {timeout_s:g} s", outcome,
                            code="upstream_timeout")
    if kind == "connect":
        return RequestError(502, "upstream is unavailable", outcome, code="upstream_unavailable")
    return RequestError(502, "upstream sent an invalid response", outcome, code="upstream_error")


def internal_error() -> RequestError:
    """The 500 for a bug in the proxy (the log has the traceback)."""
    return RequestError(500, "internal proxy error", "error")


def first_line(text: object) -> str:
    """aiohttp's parser messages add a picture of the bad bytes on later lines: keep the words."""
    lines = str(text).strip().splitlines()
    return lines[0].rstrip(":") if lines else "bad syntax"
