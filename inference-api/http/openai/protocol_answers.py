"""The OpenAI routes' answers and /tokenize's and /detokenize's, as pydantic models.

The routes build their answers as plain dicts; these models describe them in /openapi.json,
and the fuzzing test checks every answer against them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .protocol_messages import ToolCall


class OpenAIErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """The error of the /v1 routes."""

    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    """The served model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int
    parent: str | None = Field(None, description="for a LoRA adapter, the model it adapts")


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"]
    data: list[ModelCard]


class PromptTokensDetails(BaseModel):
    """What became of the prompts' tokens."""

    cached_tokens: int = Field(description="prompt tokens found in the cache (prefix reuse) "
                                           "and not computed again")


class Usage(BaseModel):
    """Tokens of the prompts (each once) and of every choice."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy log probabilities, one entry per token (echo: the prompt's first)."""

    tokens: list[str]
    token_logprobs: list[float | None] = Field(description="null for a prompt's first token")
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int] = Field(description="where each token starts in the choice's text")


class CompletionChoice(BaseModel):
    """One choice of /v1/completions."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = Field(description="null unless logprobs was asked")
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    """POST /v1/completions, not streamed."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str = Field(description="the model and how it runs (dtype, device, "
                                                "server version): equal answers need equal "
                                                "fingerprints")
    choices: list[CompletionChoice]
    usage: Usage


class ChatMessageOut(BaseModel):
    """The assistant's turn: text, or tool calls (then content is null)."""

    role: Literal["assistant"]
    content: str | None
    refusal: None = Field(description="always null: the server never refuses in words")
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    """One of the likeliest tokens at a position."""

    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprob):
    """A generated token's log probability and the likeliest tokens at its position."""

    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """The chat shape of log probabilities."""

    content: list[TokenLogprobOut]
    refusal: None


class ChatChoice(BaseModel):
    """One choice of /v1/chat/completions."""

    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = Field(description="null unless logprobs was asked")
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletion(BaseModel):
    """POST /v1/chat/completions, not streamed."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str = Field(description="as in Completion")
    choices: list[ChatChoice]
    usage: Usage


class TokenizeAnswer(BaseModel):
    """POST /tokenize."""

    count: int
    max_model_len: int = Field(description="the context in tokens: prompt and answer together")
    tokens: list[int]


class DetokenizeAnswer(BaseModel):
    """POST /detokenize."""

    prompt: str
