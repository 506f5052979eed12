"""The shapes of the answers, as pydantic models: for the OpenAPI document only.

The routes build their answers as plain dicts; these models describe them in /openapi.json,
and the fuzzing test checks every answer against them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class NativeError(BaseModel):
    """The error of the native routes, /generate and /health."""

    status_code: int
    message: str


class OpenAIErrorDetail(BaseModel):
    """What went wrong, in OpenAI's words."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """The error of the /v1 routes."""

    error: OpenAIErrorDetail


class Health(BaseModel):
    """GET /health when the backend is ready."""

    status: Literal["ok"]
    model: str
    busy_rows: int
    max_users: int
    queued: int
    sessions: int


class ModelCard(BaseModel):
    """The served model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int


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


class CalledFunction(BaseModel):
    """The function a tool call names, and its arguments as JSON text."""

    name: str
    arguments: str


class ToolCallOut(BaseModel):
    """One tool call of an answer."""

    id: str
    type: Literal["function"]
    function: CalledFunction


class ChatMessageOut(BaseModel):
    """The assistant's turn: text, or tool calls (then content is null)."""

    role: Literal["assistant"]
    content: str | None
    refusal: None = Field(description="always null: the server never refuses in words")
    tool_calls: list[ToolCallOut] | None = None


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


class GeneratedSample(BaseModel):
    """One sample of /generate."""

    index: int
    text: str
    finish_reason: str | None
    generated_tokens: int


class GenerateAnswer(BaseModel):
    """POST /generate, not streamed (also the last event of a stream)."""

    created: float
    finished: float
    generation_time: float
    prompt: str
    prompt_tokens: int
    num_samples: int
    responses: list[GeneratedSample]


# pydantic writes a bound on an optional number whose type has its own validator (schemas.Int)
# under the Field's name; JSON Schema knows these as:
