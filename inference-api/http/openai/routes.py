"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions and /v1/chat/completions."""
from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, g, jsonify, request

from inference_api.http.errors import ApiError
from inference_api.http.plumbing import current_engine, validated
from inference_api.quote import quote, quote_name
from inference_api.serving.grammars import (grammar_for_gbnf, grammar_for_json_schema,
                                            grammar_for_response_format)
from inference_api.serving.prompts import PromptTooLong
from inference_api.serving.templates import ChatTemplateError
from inference_api.serving.tool_format import (ToolUse, answer_schema, prepare_turns,
                                               template_supports_tools, template_turns, tool_prompt,
                                               with_system_text)

from .protocol import ChatRequest, CompletionRequest, describe_openai_error
from .serving import answer

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
    """The served model, then its LoRA adapters (their parent: the served model)."""
    return jsonify(object="list", data=[_model_card(name)
                                        for name in current_engine().model_names])


@openai.get("/v1/models/<path:model_id>")
def model(model_id: str):
    """A served model (or adapter) by its id, or a 404."""
    _check_model(model_id)
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
                  grammar=_grammar(body))
    return answer(engine, body, prompts, chat=False, fields=fields)


@openai.post("/v1/chat/completions")
def chat_completions():
    """The assistant's next turn in the conversation, through the model's chat template."""
    engine, body = _read(ChatRequest)
    encoder = engine.require_ready()
    use = body.tool_use()
    turns, tools = _chat_turns(encoder, body, use)
    try:
        text = encoder.chat_text(turns, tools=tools)
        ids = encoder.encode_chat_text(text)
    except ChatTemplateError as exc:
        raise ApiError(400, str(exc), param="messages") from None
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from None
    schema, grammar = answer_schema(use), _grammar(body)
    if schema is not None and grammar is not None:
        raise ApiError(400, "a structured output (response_format) cannot be combined with "
                            "tools unless tool_choice is \"none\"", param="response_format")
    if schema is not None:
        try:
            grammar = grammar_for_json_schema(schema, "tools")
        except ValueError as exc:
            raise ApiError(400, str(exc), param="tools") from None
    fields = dict(logprobs=(body.top_logprobs or 0) if body.logprobs else None, grammar=grammar)
    return answer(engine, body, [(text, ids)], chat=True, fields=fields,
                   tools=schema is not None)


def _chat_turns(encoder, body: ChatRequest, use: ToolUse) -> tuple[list[dict], list[dict] | None]:
    """The turns for the template, and the tools for templates with their own tool syntax.

    Templates without it (the bundled model's) get the tools described in the system message
    and the tool history as plain turns: the generic format of tools.py.
    """
    turns = [m.turn() for m in body.messages]
    if template_supports_tools(encoder.info.get("chat_template")):
        turns = with_system_text(template_turns(turns), tool_prompt(use, listed=False))
        listed = [t.model_dump(exclude_none=True) for t in body.tools] if use.functions else None
        return turns, listed
    return prepare_turns(turns, use, encoder.renders_tool_role), None


def _grammar(body) -> str | None:
    """The grammar a structured output asks for (None for free text); a 400 naming the field."""
    given = [name for name in ("json_schema", "grammar", "response_format")
             if getattr(body, name, None) is not None]
    if len(given) > 1:
        raise ApiError(400, f"give one of {', '.join(given)}, not several", param=given[1])
    for name, compile_field in (("json_schema", grammar_for_json_schema),
                                ("grammar", grammar_for_gbnf),
                                ("response_format", grammar_for_response_format)):
        value = getattr(body, name, None)
        if value is not None:
            try:
                return compile_field(value)
            except ValueError as exc:  # the message names the field
                raise ApiError(400, str(exc), param=name) from None
    return None


def _model_card(name: str) -> dict:
    """A served name's card; an adapter's parent is the base model (as vLLM lists them)."""
    engine = current_engine()
    link = engine.link
    context = link.info.get("max_seq_len", engine.config.max_seq_len) if link else \
        engine.config.max_seq_len
    parent = engine.config.model_id if engine.adapter_for(name) else None
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "inference-api",
            "max_model_len": context, "parent": parent}


def _check_model(model_id: str) -> None:
    engine = current_engine()
    if model_id not in engine.model_names:
        raise ApiError(404, f"The model {quote(model_id)} does not exist; this server serves "
                               f"{engine.served_text()}", param="model", code="model_not_found")


def _read(schema):
    """The engine client and the validated body; a 400 naming the parameter when it is not valid.

    Fields OpenAI does not have are ignored, as vLLM does, and named in a log line and the
    X-Ignored-Fields header; with STRICT_FIELDS=1 they are refused instead.
    """
    engine = current_engine()
    context = None if engine.config.strict_fields else {"ignored": []}
    body = validated(schema, describe_openai_error, context)
    if context and context["ignored"]:
        g.ignored_fields = context["ignored"]
        log.info("request %s ignored unknown fields: %s", g.request_id,
                 _named(context["ignored"]))
    _check_model(body.model)
    return engine, body


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
