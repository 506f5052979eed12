"""What every route shares of the HTTP exchange: the engine client, the body read within its
limits and validated, and whether the client is still there.

Routes import from here, and this imports no route and no app factory, as Flask's tutorial keeps
`get_db`. Every route that takes a body reads it through read_json_object, so every limit here
holds for all of them, and a client's body can only ever give a 4xx.
"""
from __future__ import annotations

import json
import re
import select
import socket

from flask import current_app, g, request
from pydantic import ValidationError

from inference_api.quote import quote, quote_name
from inference_api.serving.engine_client import EngineClient
from inference_api.serving.errors import UnknownModel
from inference_api.serving.models import Models

from .errors import ApiError
from .worker import close_connection

MAX_JSON_DEPTH = 32  # the deepest valid body (chat content parts) is 5 levels deep
READ_STEP = 64 * 1024
# A body over the limit is still read, up to this many bytes, before its 413 goes out: a socket
# closed with unread data resets the connection, and a sender still writing the body (an nginx
# in front, any client that does not wait for 100-continue) then gets the reset instead of the
# answer; an nginx edge takes it for a dead replica. Larger bodies are cut off at once.
DRAIN_BYTES = 8 << 20
ACCEPTED_CODINGS = ("identity",)

try:  # gunicorn reports a malformed chunked body while the application reads it
    from gunicorn.http.errors import NoMoreData, ParseException

    _BODY_ERRORS: tuple = (ParseException, NoMoreData)
except ImportError:  # Flask's test client and other servers
    _BODY_ERRORS = ()

# A JSON string, escapes included (unrolled: linear time, no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def max_body_bytes() -> int:
    """The largest body accepted (MAX_BODY_BYTES)."""
    return current_app.config["MAX_CONTENT_LENGTH"]


def read_body() -> bytes:
    """The raw body, read at most MAX_BODY_BYTES + 1 bytes: 413 over it, 415 if compressed.

    Read here rather than by werkzeug, which cuts a chunked body at the limit without saying so,
    and lets gunicorn's errors on a malformed chunked body escape as a 500.
    """
    if "body" in g:
        return g.body
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ("",) + ACCEPTED_CODINGS:
        # Decoding would let a small body expand without bound; no client we know compresses.
        raise ApiError(415, f"Content-Encoding {coding[:40]!r} is not accepted: send the body "
                            f"uncompressed (Content-Encoding: identity, or no header)")
    limit = max_body_bytes()
    stream, parts, size = request.environ["wsgi.input"], [], 0
    if request.content_length is not None and request.content_length > limit:
        g.body_drained = _discard(stream, request.content_length)
        raise ApiError(413, f"the request body is over {limit} bytes")
    try:
        while size <= limit:
            part = stream.read(min(READ_STEP, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except _BODY_ERRORS as exc:
        raise ApiError(400, f"the request body could not be read: {type(exc).__name__}: "
                            f"{str(exc)[:80]}") from None
    if size > limit:
        g.body_drained = _discard(stream, DRAIN_BYTES)
        raise ApiError(413, f"the request body is over {limit} bytes")
    g.body = b"".join(parts)
    return g.body


def _discard(stream, length: int) -> bool:
    """Read and drop up to `length` bytes of a refused body (none past DRAIN_BYTES): what the
    sender has written is read, so closing the connection after the 413 does not reset it.
    True when the body was read to its end."""
    if length > DRAIN_BYTES:
        return False
    try:
        while length > 0:
            part = stream.read(min(READ_STEP, length))
            if not part:
                return True
            length -= len(part)
    except _BODY_ERRORS + (OSError,):
        return False  # the refusal stands whatever the rest of the body was
    return True


def finish_body(response):
    """After an answer given without reading the whole body (a 404 for an unknown model, say):
    read the rest within the limits, so that the connection's next request starts where it
    should; when that cannot be done, the connection closes after this answer."""
    sent_body = request.content_length or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()
    if not sent_body or "body" in g or g.get("body_drained"):
        return response
    try:
        read_body()
    except ApiError:
        pass  # this answer stands; only the connection's fate is decided here
    if "body" not in g and not g.get("body_drained"):
        close_connection()
    return response


def json_depth_over(raw: bytes, limit: int) -> bool:
    """True when the JSON text nests arrays and objects more than `limit` levels deep.

    Counted before parsing, in C-speed passes: json and pydantic recurse once per level, and
    RecursionError is not the only harm a deep value does (repr, comparisons, logging).
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        inner = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if inner == brackets:
            return False  # unbalanced: malformed, and json.loads says where
        brackets = inner
    return bool(brackets)


def _has_lone_surrogate(body) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_json_object() -> dict:
    """The request body as a JSON object, or a 4xx that says what is wrong with it."""
    raw = read_body()
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object")
    if json_depth_over(raw, MAX_JSON_DEPTH):
        raise ApiError(400, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        body = json.loads(raw)
    except RecursionError:  # unbalanced brackets pass the count above; json then recurses
        raise ApiError(400, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep"
                       ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    if _has_lone_surrogate(body):
        raise ApiError(400, "the JSON body holds a lone surrogate escape (such as \\udc00): "
                            "strings must be valid Unicode text")
    return body


def require_json_media_type() -> None:
    """A 415 when the body is declared as something other than JSON (text/plain, a form), as
    vLLM answers on the OpenAI routes; a body with no Content-Type is read as JSON."""
    declared = request.headers.get("Content-Type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type {quote_name(media, 40)} is not accepted: send the "
                            f"body as JSON (Content-Type: application/json)")


def current_models() -> Models:
    """The served models of the app serving this request (made by app.create_server)."""
    return current_app.extensions["models"]


def current_engine() -> EngineClient:
    """The default (first) model's engine client: routes that name no model use it."""
    return current_models().default


def engine_for(name: str | None, not_found) -> EngineClient:
    """The engine client serving a model or adapter name (None: the default model); else the
    ApiError not_found(name, served names as text) makes, in the route's words."""
    try:
        return current_models().engine_for(name)
    except UnknownModel as exc:
        raise not_found(exc.name, exc.served) from None


def not_served(name: str, served: str) -> ApiError:
    """The native routes' 404 for a model or adapter name nothing here serves (engine_for's
    not_found)."""
    plural = "s are" if len(current_models().names) > 1 else " is"
    return ApiError(404, f"model {quote(name)} is not served here; the served model{plural} "
                         f"{served}")


def validated(schema, describe, context: dict | None = None):
    """The request body validated by a pydantic schema, or a 400 as `describe` words it.

    describe(ValidationError) returns (message, param, code); context goes to the validators.
    """
    try:
        return schema.model_validate(read_json_object(), context=context)
    except ValidationError as exc:
        message, param, code = describe(exc)
        raise ApiError(400, message, code=code, param=param) from None


def client_gone() -> bool:
    """True when this request's client closed its connection (checked without reading its data)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
