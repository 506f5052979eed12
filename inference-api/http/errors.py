"""Error answers: an ApiError becomes OpenAI's shape under /v1/ and the native shape elsewhere."""
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
    "param", "code"}}.
    """
    if not request.path.startswith("/v1/"):
        return {"status_code": status, "message": message}
    kind = ("server_error" if status >= 500 else "authentication_error" if status == 401
            else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_answer(exc: ApiError):
    """The response for an ApiError: its status, its headers, the route's error shape."""
    response = jsonify(error_payload(exc.status, exc.message, exc.param, exc.code))
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response
