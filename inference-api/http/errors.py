"""Error answers: an ApiError becomes Anthropic's shape under /v1/messages, OpenAI's elsewhere
under /v1/, and the native shape on the other routes."""
from __future__ import annotations

from flask import jsonify, request

from inference_api.serving.errors import ContextExceeded, Unavailable


class ApiError(Exception):
    """An error answer: status, message, extra headers, a machine-readable code, the field at fault.

    Answered as {"status_code", "message"} on the native routes and in OpenAI's
    {"error": {...}} shape under /v1/.
    """

    def __init__(self, status: int, message: str, headers: dict | None = None,
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.code, self.param = code, param


def from_serving(exc: Unavailable | ContextExceeded) -> ApiError:
    """The answer to a refusal of the serving layer: 503 with Retry-After, or a 400."""
    if isinstance(exc, Unavailable):
        return ApiError(503, str(exc), {"Retry-After": str(exc.retry_after)}, exc.code)
    return ApiError(400, str(exc), code="context_length_exceeded")


def error_payload(status: int, message: str, param: str | None = None,
                  code: str | None = None) -> dict:
    """An error in the shape the request's route speaks: OpenAI's under /v1/, else native.

    Native: {"status_code": N, "message": "..."}; OpenAI: {"error": {"message", "type",
    "param", "code"}}; Anthropic's under /v1/messages: {"type": "error", "error": {"type",
    "message"}}.
    """
    if not request.path.startswith("/v1/"):
        return {"status_code": status, "message": message}
    if is_anthropic_path(request.path):
        return {"type": "error", "error": {"type": anthropic_error_type(status),
                                           "message": message}}
    kind = ("server_error" if status >= 500 else "authentication_error" if status == 401
            else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# Anthropic's error types by status; 503 is its "overloaded" (it sends 529 for that).
ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                         403: "permission_error", 404: "not_found_error",
                         413: "request_too_large", 429: "rate_limit_error",
                         503: "overloaded_error"}


def is_anthropic_path(path: str) -> bool:
    """Whether a path is Anthropic's Messages API (its own error shape)."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for a status."""
    return ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else
                                     "invalid_request_error")


def error_answer(exc: ApiError):
    """The response for an ApiError: its status, its headers, the route's error shape."""
    response = jsonify(error_payload(exc.status, exc.message, exc.param, exc.code))
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response
