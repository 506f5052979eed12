"""Request bodies of the native routes, validated with pydantic."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .params import MAX_STOP_CHARS, MAX_STOPS, MAX_TOP_K

MAX_NEW_TOKENS = 2048

StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only white space")
    return text


PromptText = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class InferenceRequest(BaseModel):
    """POST /inference/<model> and /predictions/<model>. Numeric strings are accepted as numbers."""

    model_config = ConfigDict(extra="forbid")

    text: PromptText
    temperature: float = Field(1.0, ge=0, le=5)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    stop_sequence: Union[StopText, list[StopText], None] = None
    return_prompt: bool = False
    seed: int | None = Field(None, ge=0, lt=2**63)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    ignore_eos: bool = False  # generate exactly max_tokens, as benchmark tools expect
    session_id: Union[str, int, None] = None  # sent by older clients; only logged

    @field_validator("stop_sequence")
    @classmethod
    def _few_stops(cls, stop):
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        return stop

    def stops(self) -> tuple[str, ...]:
        """The stop strings as a tuple."""
        if self.stop_sequence is None:
            return ()
        return (self.stop_sequence,) if isinstance(self.stop_sequence, str) else tuple(
            self.stop_sequence)

    def sampling(self, max_tokens: int):
        """The backend's SamplingParams for this request."""
        from .params import SamplingParams

        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature,
                              top_k=self.top_k or 0, top_p=self.top_p, seed=self.seed,
                              repetition_penalty=self.repetition_penalty, stop=self.stops(),
                              return_prompt=self.return_prompt, ignore_eos=self.ignore_eos)


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem: the field, the value sent and what is allowed."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "missing":
            parts.append(f"{field} is required")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{field} is not a known field")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{field}={err.get('input')!r}: {msg}")
    return "; ".join(parts)
