"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions and /v1/chat/completions."""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import closing

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from .frontend import ApiError
from .prompts import ChatTemplateError, PromptTooLong
from .protocol import FINISH_EOS, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP
from .quote import quote, quote_name
from .samples import (open_samples, run_to_end, sample_params, sse_event, sse_response,
                      text_batches)
from .schemas_openai import ChatRequest, CompletionRequest, describe_openai_error

openai = Blueprint("openai", __name__)
log = logging.getLogger("inference_api.requests")
STARTED = int(time.time())
# OpenAI knows no "eos": the model ending its answer is a "stop", as a stop string is.
FINISH_REASONS = {FINISH_STOP: "stop", FINISH_EOS: "stop", FINISH_LENGTH: "length"}
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class OpenAIError(ApiError):
    """An error answered in OpenAI's shape, naming the parameter at fault."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(status, message, headers, code)
        self.param = param


def error_body(status: int, message: str, param: str | None = None, code: str | None = None):
    """{"error": {"message", "type", "param", "code"}} with the HTTP status."""
    kind = ("server_error" if status >= 500 else "authentication_error" if status == 401
            else "invalid_request_error")
    response = jsonify(error={"message": message, "type": kind, "param": param, "code": code})
    response.status_code = status
    return response


@openai.errorhandler(ApiError)
def _api_error(exc: ApiError):
    log.info("request %s %s status=%s message=%r", g.get("request_id", "-"), request.path,
             exc.status, exc.message)
    response = error_body(exc.status, exc.message, getattr(exc, "param", None), exc.code)
    response.headers.update(exc.headers)
    return response


@openai.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if exc.code == 413:
        return _api_error(ApiError(413, f"the request body is over "
                                        f"{current_app.config['MAX_CONTENT_LENGTH']} bytes"))
    return _api_error(ApiError(exc.code or 500, exc.description or exc.name))


@openai.errorhandler(Exception)
def _unexpected(exc: Exception):
    current_app.logger.exception("request %s failed", g.get("request_id"))
    return error_body(500, f"internal error: {type(exc).__name__}")


@openai.route("/v1/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest: str):
    """Any other /v1 path: a 404 in OpenAI's shape, as OpenAI answers it."""
    raise OpenAIError(404, f"Invalid URL ({request.method} /v1/{quote_name(rest)})",
                      code="unknown_url")


@openai.get("/v1/models")
def models():
    """The one served model."""
    return jsonify(object="list", data=[_model_card()])


@openai.get("/v1/models/<path:model_id>")
def model(model_id: str):
    """The served model by its id, or a 404."""
    _check_model(model_id)
    return jsonify(_model_card())


@openai.post("/v1/completions")
def completions():
    """Continue each prompt as given."""
    frontend, body = _read(CompletionRequest)
    encoder = frontend.require_ready()
    try:
        prompts = [(text, encoder.encode(text)) for text in body.prompt]
    except PromptTooLong as exc:
        raise OpenAIError(400, str(exc), param="prompt", code="context_length_exceeded") from None
    return _answer(frontend, body, prompts, chat=False)


@openai.post("/v1/chat/completions")
def chat_completions():
    """The assistant's next turn in the conversation, through the model's chat template."""
    frontend, body = _read(ChatRequest)
    encoder = frontend.require_ready()
    try:
        text = encoder.chat_text([m.turn() for m in body.messages])
        ids = encoder.encode_chat_text(text)
    except ChatTemplateError as exc:
        raise OpenAIError(400, str(exc), param="messages") from None
    except PromptTooLong as exc:
        raise OpenAIError(400, str(exc), param="messages", code="context_length_exceeded") from None
    return _answer(frontend, body, [(text, ids)], chat=True)


def _model_card() -> dict:
    from .server import frontend_of

    frontend = frontend_of(current_app)
    link = frontend.link
    context = link.info.get("max_seq_len", frontend.config.max_seq_len) if link else \
        frontend.config.max_seq_len
    return {"id": frontend.config.model_id, "object": "model", "created": STARTED,
            "owned_by": "inference-api", "max_model_len": context}


def _check_model(model_id: str) -> None:
    from .server import frontend_of

    served = frontend_of(current_app).config.model_id
    if model_id != served:
        raise OpenAIError(404, f"The model {quote(model_id)} does not exist; this server serves "
                               f"{served!r}", param="model", code="model_not_found")


def _read(schema):
    """The Frontend and the validated body; a 400 naming the parameter when it is not valid."""
    from .server import frontend_of, read_json_object

    try:
        body = schema.model_validate(read_json_object())
    except ValidationError as exc:
        message, param, code = describe_openai_error(exc)
        raise OpenAIError(400, message, param=param, code=code) from None
    _check_model(body.model)
    return frontend_of(current_app), body


def _answer(frontend, body, prompts: list[tuple[str, list[int]]], chat: bool):
    """Open n sessions per prompt, then answer in one piece or as a stream of chunks."""
    jobs = []
    for text, ids in prompts:
        if not ids:
            raise OpenAIError(400, "the prompt has no tokens", param="prompt")
        default = frontend.context_len if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
        max_tokens = frontend.fit_max_tokens(len(ids), body.wanted_tokens, default)
        jobs += [(ids, params, text) for params in
                 sample_params(body.n, body.seed, **body.sampling_fields(max_tokens))]
    samples = open_samples(frontend, jobs)
    prompt_tokens = sum(len(ids) for _, ids in prompts)  # each prompt once, as OpenAI counts
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": frontend.config.model_id}
    if body.stream:
        return sse_response(_events(frontend, samples, head, chat, body.include_usage,
                                    prompt_tokens))
    run_to_end(frontend, samples, request.environ)
    failed = next((s for s in samples if s.finish_reason == FINISH_ERROR), None)
    if failed is not None:
        raise OpenAIError(500, f"the generation failed: {failed.error}", code="generation_failed")
    choices = []
    for index, sample in enumerate(samples):
        finish = FINISH_REASONS.get(sample.finish_reason)
        if chat:
            choices.append({"index": index, "message": {"role": "assistant",
                                                        "content": sample.text},
                            "logprobs": None, "finish_reason": finish})
        else:
            choices.append({"index": index, "text": sample.text, "logprobs": None,
                            "finish_reason": finish})
    return jsonify(**head, choices=choices, usage=_usage(prompt_tokens, samples))


def _usage(prompt_tokens: int, samples) -> dict:
    completion = sum(s.completion_tokens for s in samples)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _events(frontend, samples, head: dict, chat: bool, include_usage: bool, prompt_tokens: int):
    """The stream's events: a chunk per batch of text, the usage chunk if asked, [DONE]."""
    head = dict(head, object="chat.completion.chunk" if chat else "text_completion")
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else (
                {"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None,
                      "finish_reason": finish}
        return sse_event({**head, "choices": [choice], **extra})

    if chat:  # OpenAI opens each choice with the role, before any token
        for index in range(len(samples)):
            yield chunk(index, None, None, role=True)
    with closing(text_batches(frontend, samples, request.environ)) as batches:
        for index, text, reason, error in batches:
            if reason == FINISH_ERROR:
                if text:
                    yield chunk(index, text, None)
                # The openai client raises on an error event; without [DONE] others see a cut.
                yield sse_event({"error": {"message": f"the generation failed: {error}",
                                           "type": "server_error", "param": None,
                                           "code": "generation_failed"}})
                return
            if text or reason is not None:
                yield chunk(index, text, FINISH_REASONS.get(reason))
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": _usage(prompt_tokens, samples)})
    yield sse_event("[DONE]")
