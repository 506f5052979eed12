"""OpenAI's Responses API: POST /v1/responses, GET and DELETE /v1/responses/{id}."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify

from inference_api.http.conversation import (answer_grammar, open_one, prompt_of, reply_whole,
                                             sampling_of)
from inference_api.http.errors import ApiError
from inference_api.http.fields import describe_validation_error, field_path
from inference_api.http.plumbing import engine_for, require_json_media_type, validated
from inference_api.http.samples import sse_response
from inference_api.quote import quote, quote_name
from inference_api.serving.grammars import grammar_for_response_format

from .answers import ResponseShape, call_item, finished_status, message_item, new_id, usage
from .protocol import ResponsesRequest, output_items, turns_of
from .store import ResponseStore
from .stream import response_events

responses = Blueprint("responses", __name__)


def response_store() -> ResponseStore:
    """The app's store of responses (made with the app: one worker serves every request)."""
    return current_app.extensions["responses"]


@responses.post("/v1/responses")
def create():
    """The model's response to the input (after the stored conversation it continues)."""
    require_json_media_type()
    body = validated(ResponsesRequest, _describe)
    engine = engine_for(body.model, lambda name, served: ApiError(  # a model's, or an adapter's
        404, f"The model {quote(name)} does not exist; this server serves {served}",
        param="model", code="model_not_found"))
    encoder = engine.require_ready()
    items = _history(body.previous_response_id) + body.items()
    use = body.tool_use()
    text, ids = prompt_of(encoder, turns_of(body.instructions, items), use, "input")
    text_format, grammar = _text_format(body)
    grammar, tools = answer_grammar(use, grammar, "text.format")
    sampling = sampling_of(engine, body, ("temperature", "top_p"))
    answer = open_one(engine, text, ids, body.max_output_tokens, None, body.model,
                      grammar=grammar, **sampling)
    shape = ResponseShape(body, new_id("resp"), int(time.time()), body.model,
                          text_format, sampling)

    def keep(response: dict) -> None:
        if body.store:
            response_store().put(response, items + output_items(response["output"]))

    if body.stream:
        return sse_response(response_events(engine, answer, shape, len(ids), tools, keep))
    reply = reply_whole(engine, answer, tools)
    status, incomplete = finished_status(reply.sample)
    output = []
    if reply.content or not reply.calls:
        output.append(message_item(new_id("msg"), reply.content or "", status))
    output += [call_item(new_id("fc"), call["id"], call["function"]["name"],
                         call["function"]["arguments"], "completed") for call in reply.calls]
    response = shape(status, output, usage(len(ids), reply.sample), incomplete)
    keep(response)
    return jsonify(response)


@responses.get("/v1/responses/<path:response_id>")
def retrieve(response_id: str):
    """A stored response, as it was answered."""
    return jsonify(_stored(response_id).response)


@responses.delete("/v1/responses/<path:response_id>")
def delete(response_id: str):
    """Forget a stored response."""
    if not response_store().delete(response_id):
        _stored(response_id)  # the 404
    return jsonify(id=response_id, object="response.deleted", deleted=True)


def _stored(response_id: str):
    stored = response_store().get(response_id)
    if stored is None:
        raise ApiError(404, f"No response with id {quote(quote_name(response_id, 80))} is "
                            f"stored (never stored, deleted, or older than the store keeps)",
                       code="response_not_found")
    return stored


def _history(previous_response_id: str | None) -> list[dict]:
    """The conversation the previous response ends: its history, input and output."""
    if previous_response_id is None:
        return []
    stored = response_store().get(previous_response_id)
    if stored is None:
        raise ApiError(400, f"previous_response_id: no response with id "
                            f"{quote(quote_name(previous_response_id, 80))} is stored",
                       param="previous_response_id", code="previous_response_not_found")
    return list(stored.items)


def _text_format(body: ResponsesRequest) -> tuple[dict | None, str | None]:
    """(text.format as given, its grammar): the Responses API's flat json_schema format is
    chat's response_format with name, schema, strict and description beside the type."""
    form = body.text.format if body.text else None
    if form is None:
        return None, None
    chat_form = form
    if isinstance(form, dict) and form.get("type") == "json_schema":
        chat_form = {"type": "json_schema", "json_schema": {
            key: value for key, value in form.items() if key != "type"}}
    try:
        return form, grammar_for_response_format(chat_form)
    except ValueError as exc:
        message = str(exc).replace("response_format.json_schema", "text.format").replace(
            "response_format", "text.format")
        raise ApiError(400, message, param="text.format") from None


def _describe(exc) -> tuple[str, str | None, str | None]:
    message, _, _ = describe_validation_error(exc)
    errors = exc.errors(include_url=False)
    param = field_path(errors[0]) if errors else None
    return message, param, None
