"""GET /openapi.json: the OpenAPI 3.1 document of every route, built from the pydantic models.

The request bodies are the models the routes validate with, so the document cannot drift from
what the server accepts; the answers are described by the models below, which only document.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from pydantic.json_schema import models_json_schema

from .anthropic.protocol import CountTokensRequest, MessagesRequest
from .anthropic.protocol_answers import AnthropicError, AnthropicMessage, TokenCount
from .health import Health
from .native.protocol import GenerateAnswer, GenerateRequest, InferenceRequest, NativeError
from .openai.protocol import ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from .openai.protocol_answers import (ChatCompletion, Completion, DetokenizeAnswer, ModelCard,
                                      ModelList, OpenAIError, TokenizeAnswer)
from .plumbing import current_models
from .responses.protocol import ResponsesRequest
from .responses.protocol_answers import ResponseDeleted, ResponseObject
from .solve.protocol import CodingSolution, MathSolution, SolutionText, SolveRequest

openapi = Blueprint("openapi", __name__)
JSON, TEXT, SSE = "application/json", "text/plain", "text/event-stream"
# pydantic writes a bound on an optional number whose type has its own validator (fields.Int)
# under the Field's name; JSON Schema knows these as:
_KEYWORDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _standard_keywords(node):
    """The schema with pydantic's ge/le/gt/lt renamed to JSON Schema's keywords."""
    if isinstance(node, list):
        return [_standard_keywords(item) for item in node]
    if not isinstance(node, dict):
        return node
    is_number = node.get("type") in ("integer", "number")
    return {(_KEYWORDS[key] if is_number and key in _KEYWORDS else key): _standard_keywords(value)
            for key, value in node.items()}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


# One server-sent event as a reader of the stream sees it: a data line (JSON, or [DONE] on /v1).
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"data": {"type": "string"}, "event": {"const": "message"}}}
# The Responses and Messages APIs name each event by its type (event: response.created).
NAMED_SSE_EVENT = {"type": "object", "required": ["event", "data"],
                   "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}


def _content(schema: dict | None = None, media: str = JSON) -> dict:
    default = SSE_EVENT if media == SSE else {"type": "string"}
    return {media: {"schema": schema if schema is not None else default}}


def _errors(statuses: tuple[int, ...], shape: str) -> dict:
    reasons = {400: "a bad body or field (the message says which)", 404: "unknown model",
               413: "the body is over MAX_BODY_BYTES",
               415: "a compressed body (or, under /v1/, one not sent as JSON)",
               500: "the generation failed", 503: "loading, restarting, shutting down or "
               "too many prompts waiting (Retry-After)"}
    return {str(s): {"description": reasons[s], "content": _content(_ref(shape))}
            for s in statuses}


def _generation(summary: str, request: str, ok: dict, shape: str) -> dict:
    return {"summary": summary,
            "requestBody": {"required": True, "content": _content(_ref(request))},
            "responses": {"200": ok, **_errors((400, 404, 413, 415, 500, 503), shape)}}


def _tokens(summary: str, request: str, answer: str) -> dict:
    return {"summary": summary,
            "requestBody": {"required": True, "content": _content(_ref(request))},
            "responses": {"200": {"description": "done", "content": _content(_ref(answer))},
                          **_errors((400, 404, 413, 415, 503), "NativeError")}}


def _stored_response_doc() -> dict:
    """GET and DELETE of a stored response."""
    param = [{"name": "response_id", "in": "path", "required": True,
              "schema": {"type": "string"}}]
    missing = {"404": {"description": "no such stored response (never stored, deleted or "
                                      "expired)", "content": _content(_ref("OpenAIError"))}}
    return {"get": {"summary": "a stored response", "parameters": param, "responses": {
                "200": {"description": "as it was answered",
                        "content": _content(_ref("ResponseObject"))}, **missing}},
            "delete": {"summary": "forget a stored response", "parameters": param, "responses": {
                "200": {"description": "deleted", "content": _content(_ref("ResponseDeleted"))},
                **missing}}}


def build_document(model_ids: list[str]) -> dict:
    """The OpenAPI 3.1 document of this server, for the served names (the model's, then its
    LoRA adapters')."""
    requests = [InferenceRequest, CompletionRequest, ChatRequest, GenerateRequest,
                TokenizeRequest, DetokenizeRequest, ResponsesRequest, MessagesRequest,
                CountTokensRequest, SolveRequest]
    answers = [NativeError, OpenAIError, Health, ModelList, ModelCard, Completion,
               ChatCompletion, GenerateAnswer, TokenizeAnswer, DetokenizeAnswer,
               ResponseObject, ResponseDeleted, AnthropicMessage, TokenCount, AnthropicError,
               MathSolution, CodingSolution, SolutionText]
    _, schemas = models_json_schema([(m, "validation") for m in requests]
                                    + [(m, "serialization") for m in answers],
                                    ref_template="#/components/schemas/{model}")
    components = _standard_keywords(schemas["$defs"])
    for name in ("CompletionRequest", "ChatRequest", "ResponsesRequest", "MessagesRequest",
                 "CountTokensRequest"):  # any other model is a 404
        components[name]["properties"]["model"]["enum"] = list(model_ids)
    model_param = {"name": "model_id", "in": "path", "required": True,
                   "schema": {"type": "string", "enum": list(model_ids)}}
    stream = {"description": "the text as it is generated", "content": _content(media=TEXT)}

    def sse_or(name: str, named: bool = False) -> dict:
        return {"description": "the answer; with \"stream\": true, server-sent events",
                "content": {**_content(_ref(name)),
                            **_content(NAMED_SSE_EVENT if named else None, SSE)}}

    def native_doc(summary: str, named: bool = True) -> dict:
        return {"parameters": [model_param] if named else [],
                **_generation(summary, "InferenceRequest", stream, "NativeError")}
    paths = {
        "/inference/{model_id}": {"post": native_doc("stream the continuation of text")},
        "/predictions/{model_id}": {"post": native_doc("stream the answer to text as a user turn")},
        "/inference": {"post": native_doc("/inference/{model_id} of the default model", False)},
        "/predictions": {"post": native_doc("/predictions/{model_id} of the default model",
                                            False)},
        "/v1/completions": {"post": _generation("continue each prompt", "CompletionRequest",
                                                sse_or("Completion"), "OpenAIError")},
        "/v1/chat/completions": {"post": _generation("the assistant's next turn", "ChatRequest",
                                                     sse_or("ChatCompletion"), "OpenAIError")},
        "/v1/responses": {"post": _generation(
            "OpenAI's Responses API: the model's response", "ResponsesRequest",
            sse_or("ResponseObject", named=True), "OpenAIError")},
        "/v1/responses/{response_id}": _stored_response_doc(),
        "/v1/messages": {"post": _generation(
            "Anthropic's Messages API: the assistant's next message", "MessagesRequest",
            sse_or("AnthropicMessage", named=True), "AnthropicError")},
        "/v1/messages/count_tokens": {"post": {
            "summary": "the prompt's tokens for these messages, as /v1/messages makes it",
            "requestBody": {"required": True, "content": _content(_ref("CountTokensRequest"))},
            "responses": {"200": {"description": "the count", "content": _content(_ref(
                "TokenCount"))}, **_errors((400, 404, 413, 415, 503), "AnthropicError")}}},
        "/generate": {"post": _generation("num_samples continuations of text", "GenerateRequest",
                                          sse_or("GenerateAnswer"), "NativeError")},
        "/solve/math": {"post": _generation(
            "a worked solution of a math problem and its final answer", "SolveRequest",
            sse_or("MathSolution"), "NativeError")},
        "/solve/coding": {"post": _generation(
            "a solution of a programming problem and its code", "SolveRequest",
            sse_or("CodingSolution"), "NativeError")},
        "/tokenize": {"post": _tokens("the token ids of a prompt or of chat messages",
                                      "TokenizeRequest", "TokenizeAnswer")},
        "/detokenize": {"post": _tokens("the text of token ids", "DetokenizeRequest",
                                        "DetokenizeAnswer")},
        "/v1/models": {"get": {"summary": "the served model", "responses": {
            "200": {"description": "one model", "content": _content(_ref("ModelList"))}}}},
        "/v1/models/{model_id}": {"get": {
            "summary": "the served model by its id",
            "parameters": [{**model_param, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the model",
                                  "content": _content(_ref("ModelCard"))},
                          **_errors((404,), "OpenAIError")}}},
        "/health": {"get": {"summary": "ready or not, and how busy", "responses": {
            "200": {"description": "ready", "content": _content(_ref("Health"))},
            **_errors((503,), "NativeError")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "Prometheus text format", "content": _content(media=TEXT)}}}},
        "/openapi.json": {"get": {"summary": "this document", "responses": {
            "200": {"description": "OpenAPI 3.1", "content": _content({"type": "object"})}}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "Inference API", "version": "1",
                     "description": f"Serves {', '.join(model_ids)}. Errors are JSON: "
                                    "{status_code, message} on the native routes and /generate, "
                                    "{type: error, error: {type, message}} on /v1/messages, "
                                    "{error: {message, type, param, code}} on the rest of /v1."},
            "paths": paths, "components": {"schemas": components}}


@openapi.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 document of every route."""
    document = current_app.extensions.get("openapi_document")
    if document is None:  # built once: the models do not change while the server runs
        document = build_document(current_models().names)
        current_app.extensions["openapi_document"] = document
    return jsonify(document)
