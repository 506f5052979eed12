"""The Responses API's answers as pydantic models: they describe them in /openapi.json, and the
fuzzing test checks every answer against them."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel


class OutputText(BaseModel):
    """The text of an output message."""

    type: Literal["output_text"]
    text: str
    annotations: list
    logprobs: list


class OutputMessage(BaseModel):
    """The assistant's text as an output item."""

    type: Literal["message"]
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    """A call of one of the request's functions."""

    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


class InputTokensDetails(BaseModel):
    """cached_tokens: prompt tokens read from the prefix cache."""

    cached_tokens: int


class OutputTokensDetails(BaseModel):
    """reasoning_tokens: always 0 here."""

    reasoning_tokens: int


class ResponseUsage(BaseModel):
    """Tokens of the prompt and of the answer."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    """Why a response is incomplete."""

    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """POST /v1/responses not streamed, and GET /v1/responses/{id}."""

    id: str
    object: Literal["response"]
    created_at: int
    background: bool
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    error: dict | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[Union[OutputMessage, OutputFunctionCall]]
    parallel_tool_calls: bool
    previous_response_id: str | None
    store: bool
    temperature: float
    top_p: float
    text: dict
    tool_choice: Union[str, dict]
    tools: list[dict]
    truncation: Literal["disabled"]
    usage: ResponseUsage | None
    metadata: dict
    user: str | None


class ResponseDeleted(BaseModel):
    """DELETE /v1/responses/{id}."""

    id: str
    object: Literal["response.deleted"]
    deleted: Literal[True]
