"""Anthropic's Messages API: POST /v1/messages and POST /v1/messages/count_tokens."""
from __future__ import annotations

import json

from flask import Blueprint, jsonify

from inference_api.http.conversation import (answer_grammar, open_one, prompt_of,
                                             reply_whole, sampling_of)
from inference_api.http.errors import ApiError
from inference_api.http.fields import describe_validation_error
from inference_api.http.plumbing import engine_for, require_json_media_type, validated
from inference_api.http.samples import sse_response
from inference_api.quote import quote
from inference_api.serving.grammars import grammar_for_json_schema

from .answers import new_message_id, stop_of, tool_use_block, usage
from .protocol import CountTokensRequest, MessagesRequest
from .stream import message_events

anthropic = Blueprint("anthropic", __name__)


@anthropic.post("/v1/messages")
def messages():
    """The assistant's next message, whole or as Anthropic's stream of events."""
    engine, body = _read(MessagesRequest)
    encoder = engine.require_ready()
    use = body.tool_use()
    text, ids = prompt_of(encoder, body.turns(), use, "messages")
    grammar, tools = answer_grammar(use, _format_grammar(body), "output_config")
    sampling = sampling_of(engine, body, ("temperature", "top_p", "top_k"))
    answer = open_one(engine, text, ids, body.max_tokens, None, body.model, grammar=grammar,
                      stop=tuple(body.stop_sequences), **sampling)
    head = {"id": new_message_id(), "type": "message", "role": "assistant", "model": body.model}
    if body.stream:
        return sse_response(message_events(engine, answer, head, len(ids), tools))
    reply = reply_whole(engine, answer, tools)
    content = [{"type": "text", "text": reply.content}] if reply.content else []
    content += [tool_use_block(call["id"], call["function"]["name"],
                               json.loads(call["function"]["arguments"])) for call in reply.calls]
    stop_reason, stop_sequence = stop_of(reply.sample, bool(reply.calls))
    return jsonify(**head, content=content, stop_reason=stop_reason, stop_sequence=stop_sequence,
                   usage=usage(len(ids), reply.sample))


@anthropic.post("/v1/messages/count_tokens")
def count_tokens():
    """The prompt's tokens for these messages, system text and tools, as /v1/messages makes it."""
    engine, body = _read(CountTokensRequest)
    text, ids = prompt_of(engine.require_ready(), body.turns(), body.tool_use(), "messages")
    return jsonify(input_tokens=len(ids))


def _format_grammar(body: MessagesRequest) -> str | None:
    """The grammar of output_config.format (None: free text); a 400 for a bad schema."""
    form = body.output_config.format if body.output_config else None
    if form is None:
        return None
    try:
        return grammar_for_json_schema(form.schema_, "output_config.format.schema")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _read(schema):
    require_json_media_type()
    body = validated(schema, describe_validation_error)
    engine = engine_for(body.model, lambda name, served: ApiError(  # a model's, or an adapter's
        404, f"model: {quote(name)} does not exist; this server serves {served}"))
    return engine, body
