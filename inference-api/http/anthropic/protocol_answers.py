"""The Messages API's answers as pydantic models: they describe them in /openapi.json, and the
fuzzing test checks every answer against them."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, Field


class TextOut(BaseModel):
    """The assistant's text."""

    type: Literal["text"]
    text: str


class ToolUseOut(BaseModel):
    """A call of one of the request's tools."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict


class MessageUsage(BaseModel):
    """Tokens: input_tokens are the prompt's not read from the prefix cache."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int


class AnthropicMessage(BaseModel):
    """POST /v1/messages, not streamed."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Union[TextOut, ToolUseOut]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = Field(description="the stop sequence that ended the message")
    usage: MessageUsage


class TokenCount(BaseModel):
    """POST /v1/messages/count_tokens."""

    input_tokens: int


class AnthropicErrorDetail(BaseModel):
    """What went wrong, in Anthropic's words."""

    type: str
    message: str


class AnthropicError(BaseModel):
    """The error of the /v1/messages routes."""

    type: Literal["error"]
    error: AnthropicErrorDetail
