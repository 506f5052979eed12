"""The /solve routes' body and answers, as pydantic models.

The request model validates what the routes take; the answer models describe what they give in
/openapi.json (the fuzzing test checks every answer against them).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StrictBool

from inference_api.http.fields import REQUEST_CONFIG, Float, Int

MAX_NEW_TOKENS = 2048  # as /inference and /generate
DEFAULT_MAX_NEW_TOKENS = 512  # room for worked steps; a small model rarely needs more
MAX_PROBLEM_CHARS = 16_384
MAX_SOLVE_TEMPERATURE = 2.0
MAX_MODEL_CHARS = 256


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only white space")
    return text


# The length is checked before the text is looked at, so its error says "characters".
ProblemText = Annotated[str, Field(min_length=1, max_length=MAX_PROBLEM_CHARS),
                        AfterValidator(_not_blank)]


class SolveRequest(BaseModel):
    """POST /solve/math and /solve/coding. Numeric strings are accepted as numbers."""

    model_config = REQUEST_CONFIG

    problem: ProblemText
    max_new_tokens: Int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    # Greedy by default: the model's likeliest solution, the same every time.
    temperature: Float = Field(0.0, ge=0, le=MAX_SOLVE_TEMPERATURE)
    stream: StrictBool = False
    # Optional: the served model's name (or a LoRA adapter's); a proxy restricting a token to
    # some models reads it from here, as on every route without the model in its path.
    model: str | None = Field(None, min_length=1, max_length=MAX_MODEL_CHARS)


class SolveUsage(BaseModel):
    """Tokens of the prompt (the problem in its template) and of the solution."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["eos", "length"]  # no stop strings on these routes


class MathSolution(BaseModel):
    """POST /solve/math, not streamed (also the last event of a stream)."""

    problem: str
    solution: str
    answer: str | None = Field(description="the last \\boxed{...}, else the last 'answer:' "
                                           "line; null when the solution gives neither")
    generation_time: float
    finish_reason: FinishReason | None
    usage: SolveUsage


class CodingSolution(BaseModel):
    """POST /solve/coding, not streamed (also the last event of a stream)."""

    problem: str
    solution: str
    code: str | None = Field(description="the first fenced ``` block with code in it; null "
                                         "when the solution has none")
    generation_time: float
    finish_reason: FinishReason | None
    usage: SolveUsage


class SolutionText(BaseModel):
    """An event of a streamed solution: the next piece of its text."""

    text: str
