"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions and /v1/chat/completions."""
from __future__ import annotations

import hashlib
import time
import uuid
from importlib import metadata

from flask import Blueprint, jsonify, request

from .answers import (failure_event, open_answer, run_to_end, sample_params, sse_event,
                      sse_response, text_batches)
from .link import Job
from .prompts import ChatTemplateError, PromptTooLong
from .protocol import FINISH_EOS, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP
from .quote import quote, quote_name
from .schemas_openai import ChatRequest, CompletionRequest, describe_openai_error
from .web import ApiError, current_frontend, validated

openai = Blueprint("openai", __name__)
STARTED = int(time.time())
# OpenAI knows no "eos": the model ending its answer is a "stop", as a stop string is.
FINISH_REASONS = {FINISH_STOP: "stop", FINISH_EOS: "stop", FINISH_LENGTH: "length"}
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@openai.route("/v1/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest: str):
    """Any other /v1 path: a 404 in OpenAI's shape, as OpenAI answers it."""
    raise ApiError(404, f"Invalid URL ({request.method} /v1/{quote_name(rest)})",
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
    prompts = []
    for index, prompt in enumerate(body.prompt):
        try:
            if isinstance(prompt, str):
                prompts.append((prompt, encoder.encode(prompt)))
            else:  # token ids, as given: their text is for the stop strings' context only
                prompts.append((encoder.decode(prompt), list(prompt)))
        except PromptTooLong as exc:
            raise ApiError(400, str(exc), param="prompt",
                           code="context_length_exceeded") from None
        except ValueError as exc:  # an id outside the vocabulary
            raise ApiError(400, f"prompt {index}: {exc}", param="prompt") from None
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
        raise ApiError(400, str(exc), param="messages") from None
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from None
    return _answer(frontend, body, [(text, ids)], chat=True)


def _model_card() -> dict:
    frontend = current_frontend()
    link = frontend.link
    context = link.info.get("max_seq_len", frontend.config.max_seq_len) if link else \
        frontend.config.max_seq_len
    return {"id": frontend.config.model_id, "object": "model", "created": STARTED,
            "owned_by": "inference-api", "max_model_len": context}


def _fingerprint(frontend) -> str:
    """fp_ and a hash of what decides the answers: model, dtype, device, server version."""
    info = frontend.link.info if frontend.link else {}
    try:
        version = metadata.version("inference-api")
    except metadata.PackageNotFoundError:
        version = "unknown"
    parts = [frontend.config.model_id, str(info.get("dtype")), str(info.get("device")), version]
    return "fp_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def _check_model(model_id: str) -> None:
    served = current_frontend().config.model_id
    if model_id != served:
        raise ApiError(404, f"The model {quote(model_id)} does not exist; this server serves "
                               f"{served!r}", param="model", code="model_not_found")


def _read(schema):
    """The Frontend and the validated body; a 400 naming the parameter when it is not valid."""
    body = validated(schema, describe_openai_error)
    _check_model(body.model)
    return current_frontend(), body


def _answer(frontend, body, prompts: list[tuple[str, list[int]]], chat: bool):
    """Open n sessions per prompt, then answer in one piece or as a stream of chunks."""
    jobs = []
    for text, ids in prompts:
        if not ids:
            raise ApiError(400, "the prompt has no tokens", param="prompt")
        default = frontend.context_len if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
        max_tokens = frontend.fit_max_tokens(len(ids), body.wanted_tokens, default)
        jobs += [Job(ids, params, text) for params in
                 sample_params(body.n, body.seed, **body.sampling_fields(max_tokens))]
    answer = open_answer(frontend, jobs)
    prompt_tokens = sum(len(ids) for _, ids in prompts)  # each prompt once, as OpenAI counts
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": frontend.config.model_id,
            "system_fingerprint": _fingerprint(frontend)}
    if body.stream:
        return sse_response(_events(frontend, answer, head, chat, body.include_usage,
                                    prompt_tokens, body.n))
    samples = run_to_end(frontend, answer)
    choices = []
    for index, sample in enumerate(samples):
        finish = FINISH_REASONS.get(sample.finish_reason)
        if chat:
            choices.append({"index": index, "message": {"role": "assistant",
                                                        "content": sample.text,
                                                        "refusal": None},
                            "logprobs": None, "finish_reason": finish})
        else:
            choices.append({"index": index, "text": sample.text, "logprobs": None,
                            "finish_reason": finish})
    return jsonify(**head, choices=choices, usage=_usage(prompt_tokens, samples, body.n))


def _usage(prompt_tokens: int, samples, n: int) -> dict:
    """Token counts; a prompt's cached tokens are the fewest any of its n samples found."""
    completion = sum(s.completion_tokens for s in samples)
    cached = sum(min(s.record.cached_tokens for s in samples[i:i + n])
                 for i in range(0, len(samples), n))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _events(frontend, answer, head: dict, chat: bool, include_usage: bool, prompt_tokens: int,
            n: int):
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
        for index in range(len(answer.samples)):
            yield chunk(index, None, None, role=True)
    for index, text, reason, error in text_batches(frontend, answer):
        if reason == FINISH_ERROR:
            if text:
                yield chunk(index, text, None)
            yield failure_event(error)  # the openai client raises on it
            return
        if text or reason is not None:
            yield chunk(index, text, FINISH_REASONS.get(reason))
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": _usage(prompt_tokens, answer.samples, n)})
    yield sse_event("[DONE]")
