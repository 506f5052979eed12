"""What the request models of every API share: their config, field types and error messages."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError

from inference_api.quote import quote, quote_name
from inference_api.sampling_params import (MAX_PENALTY, MAX_REPETITION_PENALTY, MAX_SEED,
                                           MAX_STOP_CHARS, MAX_STOPS, MAX_TEMPERATURE)

MAX_PROBLEMS = 5  # problems listed in one message; a body of many bad fields names the first few
# Every request body: unknown fields refused, numbers finite (NaN and Infinity compare false with
# every bound, so a range alone lets them through). Numeric strings stay accepted as numbers, as
# older clients send them; booleans must be JSON booleans (StrictBool): "yes", "off" or 1 are
# refused rather than guessed at.
REQUEST_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
TOOL_NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's and Anthropic's rule


def tool_name(kind: str):
    """The field type of a function's or tool's name, its errors calling it `kind`."""
    def check(name: str) -> str:
        if not TOOL_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"the {kind} name {quote(name)} must be 1 to 64 letters, digits, "
                             f"underscores or dashes")
        return name
    return Annotated[str, AfterValidator(check)]


def _not_bool(value):
    # pydantic takes true as 1 for a number; a client that sends it has confused two fields.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]  # numeric strings ("4") are accepted
Float = Annotated[float, BeforeValidator(_not_bool)]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only white space")
    return text


PromptText = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


def _one_or_many(stop):
    return [stop] if isinstance(stop, str) else stop


# The sampling fields every route shares: their ranges are SamplingParams' (params.py).
Temperature = Annotated[Float, Field(ge=0, le=MAX_TEMPERATURE)]
TopP = Annotated[Float, Field(gt=0, le=1)]
MinP = Annotated[Float, Field(ge=0, le=1)]
RepetitionPenalty = Annotated[Float, Field(gt=0, le=MAX_REPETITION_PENALTY)]
Penalty = Annotated[Float, Field(ge=-MAX_PENALTY, le=MAX_PENALTY)]
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
StopList = Annotated[list[StopText], BeforeValidator(_one_or_many), Field(max_length=MAX_STOPS)]


def drop_nulls(body):
    """A body without its null fields: null means "not given" (a before-validator)."""
    return {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body


def field_path(err: dict) -> str:
    """The dotted path of the field at fault, cut when a client sent a very long key."""
    return quote_name(".".join(str(p) for p in err["loc"]) or "body")


def error_text(err: dict) -> str:
    """pydantic's message, cut: a validator's message may quote what the client sent."""
    msg = err["msg"].removeprefix("Value error, ")
    return msg if len(msg) <= 200 else msg[:200] + "..."


def join_problems(parts: list[str]) -> str:
    """The first MAX_PROBLEMS problems, and how many more there are."""
    more = len(parts) - MAX_PROBLEMS
    return "; ".join(parts[:MAX_PROBLEMS]) + (f"; and {more} more problems" if more > 0 else "")


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None, str | None]:
    """(message, param, code): a sentence per problem: the field, the value sent (cut short),
    what is allowed. The native error shape carries only the message."""
    parts = []
    for err in exc.errors(include_url=False):
        field = field_path(err)
        if err["type"] == "missing":
            parts.append(f"{field} is required")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{field} is not a known field")
        else:
            parts.append(f"{field}={quote(err.get('input'))}: {error_text(err)}")
    return join_problems(parts), None, None
