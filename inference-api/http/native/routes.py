"""POST /inference/<model> (prompt as given) and /predictions/<model> (as one chat turn)."""
from __future__ import annotations

import errno
import logging
from contextlib import closing

from flask import Blueprint, Response, g, request, stream_with_context

from inference_api.http.errors import ApiError
from inference_api.http.fields import describe_validation_error
from inference_api.http.plumbing import client_gone, engine_for, not_served, validated
from inference_api.process_messages import FINISH_ERROR
from inference_api.quote import quote
from inference_api.serving.backend_link import Job
from inference_api.serving.prompts import PromptTooLong
from inference_api.serving.templates import ChatTemplateError

from .protocol import InferenceRequest

native = Blueprint("native", __name__)
log = logging.getLogger("inference_api.requests")


class StreamCut(ConnectionResetError):
    """Raised mid-stream to drop the connection without the final chunk: the client sees a cut.

    A plain-text stream has no way to say "error" once its headers are sent; ending it with the
    zero-length chunk would make a truncated answer look complete.
    """


@native.post("/inference")
@native.post("/inference/<model_id>")
def inference(model_id: str | None = None):
    """Stream the continuation of the prompt as given (no model in the path: the default)."""
    return _generate(model_id, chat=False)


@native.post("/predictions")
@native.post("/predictions/<model_id>")
def predictions(model_id: str | None = None):
    """Stream the model's answer to the prompt as a single user turn."""
    return _generate(model_id, chat=True)


def _generate(model_id: str | None, chat: bool):
    engine = engine_for(model_id, not_served)  # a model's name, or a LoRA adapter's
    model_id = model_id or engine.config.model_id
    body = validated(InferenceRequest, describe_validation_error)
    encoder = engine.require_ready()
    try:
        if chat:
            prompt_text = encoder.chat_text([{"role": "user", "content": body.text}])
            prompt_ids = encoder.encode_chat_text(prompt_text)
        else:
            prompt_text, prompt_ids = body.text, encoder.encode(body.text)
    except (ChatTemplateError, PromptTooLong) as exc:
        raise ApiError(400, str(exc), code="context_length_exceeded"
                       if isinstance(exc, PromptTooLong) else None) from None
    max_tokens = engine.fit_max_tokens(len(prompt_ids), body.max_tokens)
    try:
        params = body.sampling(max_tokens, engine.defaults_for(body))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    job = Job(prompt_ids, params, body.text, engine.adapter_for(model_id))
    generations = engine.open([job], g.request_id, request.path)
    if body.session_id is not None:
        log.info("request %s client session_id=%s", g.request_id, quote(body.session_id))

    def chunks():
        yield b""  # sends the headers now, even while the prompt waits for a row
        with closing(engine.batches(generations, client_gone)) as batches:
            for _, batch in batches:
                text = "".join(o.text for o in batch)
                if text:
                    yield text.encode()
                if batch[-1].finish_reason == FINISH_ERROR:
                    raise StreamCut(errno.ECONNRESET, f"generation failed: {batch[-1].error}")

    return Response(stream_with_context(chunks()), status=200,
                    content_type="text/plain; charset=utf-8")

