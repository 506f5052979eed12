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


class CompletionChoice(BaseModel):
    """One choice of /v1/completions."""

    index: int
    text: str
    logprobs: None
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
    """The assistant's turn."""

    role: Literal["assistant"]
    content: str
    refusal: None = Field(description="always null: the server never refuses in words")


class ChatChoice(BaseModel):
    """One choice of /v1/chat/completions."""

    index: int
    message: ChatMessageOut
    logprobs: None
    finish_reason: Literal["stop", "length"] | None


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
