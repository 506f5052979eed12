"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions and /v1/chat/completions."""
from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, g, jsonify, request

from inference_api.http.conversation import answer_grammar, prompt_of
from inference_api.http.errors import ApiError
from inference_api.http.plumbing import (current_engine, current_models, engine_for,
                                         require_json_media_type, validated)
from inference_api.quote import quote, quote_name
from inference_api.serving.prompts import PromptTooLong

from .protocol import ChatRequest, CompletionRequest, describe_openai_error
from .serving import answer
from .structured import request_grammar

openai = Blueprint("openai", __name__)
log = logging.getLogger("inference_api.requests")
MAX_IGNORED_NAMED = 20  # unknown fields named in the header; a hostile body may send thousands
STARTED = int(time.time())


@openai.route("/v1/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest: str):
    """Any other /v1 path: a 404 in OpenAI's shape, as OpenAI answers it."""
    raise ApiError(404, f"Invalid URL ({request.method} /v1/{quote_name(rest)})",
                   code="unknown_url")


@openai.get("/v1/models")
def models():
    """Each served model, each followed by its LoRA adapters (their parent: that model)."""
    return jsonify(object="list", data=[_model_card(name) for name in current_models().names])


@openai.get("/v1/models/<path:model_id>")
def model(model_id: str):
    """A served model (or adapter) by its id, or a 404."""
    return jsonify(_model_card(model_id))


@openai.post("/v1/completions")
def completions():
    """Continue each prompt as given."""
    engine, body = _read(CompletionRequest)
    encoder = engine.require_ready()
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
    if body.wanted_tokens == 0 and not (body.echo and body.logprobs is not None):
        raise ApiError(400, "max_tokens 0 is only allowed with echo and logprobs (to score the "
                            "prompt)", param="max_tokens")
    scored = body.logprobs if body.echo else None
    fields = dict(logprobs=body.logprobs, prompt_logprobs=scored, return_prompt=body.echo,
                  grammar=request_grammar(body))
    return answer(engine, body, prompts, chat=False, fields=fields)


@openai.post("/v1/chat/completions")
def chat_completions():
    """The assistant's next turn in the conversation, through the model's chat template."""
    engine, body = _read(ChatRequest)
    encoder = engine.require_ready()
    use = body.tool_use()
    text, ids = prompt_of(encoder, [m.turn() for m in body.messages], use, "messages",
                          [t.model_dump(exclude_none=True) for t in body.tools])
    grammar, tools = answer_grammar(use, request_grammar(body), "response_format")
    fields = dict(logprobs=(body.top_logprobs or 0) if body.logprobs else None, grammar=grammar)
    return answer(engine, body, [(text, ids)], chat=True, fields=fields, tools=tools)


def _model_card(name: str) -> dict:
    """A served name's card; an adapter's parent is its base model (as vLLM lists them)."""
    engine = _engine_named(name)
    link = engine.link
    context = link.info.get("max_seq_len", engine.config.max_seq_len) if link else \
        engine.config.max_seq_len
    parent = engine.config.model_id if engine.adapter_for(name) else None
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "inference-api",
            "max_model_len": context, "parent": parent}


def _engine_named(model_id: str):
    return engine_for(model_id, lambda name, served: ApiError(
        404, f"The model {quote(name)} does not exist; this server serves {served}",
        param="model", code="model_not_found"))


def _read(schema):
    """The engine client and the validated body; a 400 naming the parameter when it is not valid.

    Fields OpenAI does not have are ignored, as vLLM does, and named in a log line and the
    X-Ignored-Fields header; with STRICT_FIELDS=1 they are refused instead.
    """
    engine = current_engine()
    require_json_media_type()
    context = None if engine.config.strict_fields else {"ignored": []}
    body = validated(schema, describe_openai_error, context)
    if context and context["ignored"]:
        g.ignored_fields = context["ignored"]
        log.info("request %s ignored unknown fields: %s", g.request_id,
                 _named(context["ignored"]))
    return _engine_named(body.model), body


def _named(fields: list[str]) -> str:
    """Field names as a JSON list (escaped: safe in a header), the first few of many."""
    named = json.dumps([quote_name(f, 40) for f in fields[:MAX_IGNORED_NAMED]])
    return named + (f" and {len(fields) - MAX_IGNORED_NAMED} more"
                    if len(fields) > MAX_IGNORED_NAMED else "")


@openai.after_request
def _name_ignored_fields(response):
    """The X-Ignored-Fields header on answers whose request had unknown fields."""
    ignored = g.get("ignored_fields")
    if ignored:
        response.headers["X-Ignored-Fields"] = _named(ignored)
    return response
