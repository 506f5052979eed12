"""Per-token model access: the model a request asks for, checked against the token's `models`
claim before the request is forwarded (docs/proxy.md, "Which models a token may use")."""
from __future__ import annotations

import json
import re
from urllib.parse import unquote

from .claims import TokenPolicy
from .errors import RequestError

# The routes that name their model in the path; the API's router decodes it as unquote() does.
_MODEL_IN_PATH = re.compile(r"/(?:inference|predictions)/([^/]+)")
# Requests that generate nothing pass whatever the claim: /v1/models lists every model (docs).
_READ_METHODS = ("GET", "HEAD", "OPTIONS")


class _DuplicateModel(ValueError):
    pass


def check_model_access(policy: TokenPolicy, method: str, target: str, body: bytes) -> None:
    """Raise a 403 unless the token may use the model the request names.

    A token with a `models` claim must name an allowed model on every request that is not a
    read: in the path on /inference/<model> and /predictions/<model>, else in the JSON body's
    `model` field. A request that names none (it would get the server's default model, which
    the proxy does not know) is refused too, so the claim can never be stepped around.
    """
    if policy.models is None or method.upper() in _READ_METHODS:
        return
    path = unquote(target.split("?", 1)[0])
    match = _MODEL_IN_PATH.fullmatch(path)
    model = match[1] if match else _model_in_body(body)
    if model is None:
        raise forbidden("this token may use only some models: name one in the request's "
                        "model field")
    if not policy.allows(model):
        raise forbidden(f"this token may not use the model {json.dumps(model)[:300]}")


def _model_in_body(body: bytes) -> str | None:
    """The body's top-level `model` string; None if the body is no JSON object or names none."""
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicate_model)
    except (ValueError, RecursionError):  # UnicodeDecodeError and _DuplicateModel included
        return None
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    return model if isinstance(model, str) else None


def _no_duplicate_model(pairs: list) -> dict:
    # Parsers disagree on which of two equal keys wins; the proxy must check the one the API
    # uses, so a body that names its model twice at any level is not trusted at all.
    if sum(1 for key, _ in pairs if key == "model") > 1:
        raise _DuplicateModel("model given twice")
    return dict(pairs)


def forbidden(message: str) -> RequestError:
    """The 403 for a model the token may not use (Anthropic's permission_error on /v1/messages)."""
    return RequestError(403, message, "model_forbidden", code="model_not_allowed")
