"""Request bodies of POST /tokenize and /detokenize (vLLM's shapes), validated with pydantic."""
from __future__ import annotations

from pydantic import BaseModel, Field, StrictBool, model_validator

from inference_api.http.fields import REQUEST_CONFIG, Int, drop_nulls
from .protocol import ChatMessage

MAX_TOKEN_IDS = 1 << 20  # more ids than any context; bounds the work of one request


class TokenizeRequest(BaseModel):
    """A prompt as /v1/completions takes it, or messages as /v1/chat/completions does."""

    model_config = REQUEST_CONFIG

    model: str | None = None
    prompt: str | None = None
    add_special_tokens: StrictBool = True
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: StrictBool = True

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, body):
        return drop_nulls(body)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    """Token ids to turn back into text."""

    model_config = REQUEST_CONFIG

    model: str | None = None
    tokens: list[Int] = Field(max_length=MAX_TOKEN_IDS)
