"""POST /tokenize and /detokenize: the served model's tokenizer, for clients that count tokens."""
from __future__ import annotations

from flask import Blueprint, jsonify

from inference_api.http.errors import ApiError
from inference_api.http.fields import describe_validation_error
from inference_api.http.plumbing import engine_for, validated
from inference_api.quote import quote
from inference_api.serving.prompts import PromptTooLong
from inference_api.serving.templates import ChatTemplateError

from .protocol import DetokenizeRequest, TokenizeRequest

tokens = Blueprint("tokens", __name__)


def _ready_encoder(body):
    """The engine client and prompt encoder of the model the body names (none: the default
    model); a LoRA adapter shares its base model's tokenizer."""
    engine = engine_for(body.model, lambda name, served: ApiError(
        404, f"The model {quote(name)} does not exist; this server serves {served}"))
    return engine, engine.require_ready()


@tokens.post("/tokenize")
def tokenize():
    """A prompt's or a conversation's token ids, as the generation routes would make them."""
    body = validated(TokenizeRequest, describe_validation_error)
    engine, encoder = _ready_encoder(body)
    try:
        if body.messages is not None:
            text = encoder.chat_text([m.turn() for m in body.messages],
                                     body.add_generation_prompt)
            ids = encoder.encode_chat_text(text)
        else:
            ids = encoder.encode(body.prompt, special=body.add_special_tokens)
    except (ChatTemplateError, PromptTooLong) as exc:
        raise ApiError(400, str(exc)) from None
    return jsonify(count=len(ids), max_model_len=engine.context_len, tokens=ids)


@tokens.post("/detokenize")
def detokenize():
    """The text of token ids; an id outside the vocabulary is a 400 that names it."""
    body = validated(DetokenizeRequest, describe_validation_error)
    _, encoder = _ready_encoder(body)
    try:
        text = encoder.decode(body.tokens)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return jsonify(prompt=text)
