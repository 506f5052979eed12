"""Request bodies of the native routes and /generate, validated with pydantic."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import (AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field,
                      StrictBool, ValidationError, field_validator, model_validator)

from inference_api.sampling_params import (MAX_EXTRA_EOS, MAX_PENALTY, MAX_REPETITION_PENALTY, MAX_SAMPLES, MAX_SEED,
                     MAX_STOP_CHARS, MAX_STOPS, MAX_TEMPERATURE, MAX_TOP_K, SamplingParams)
from inference_api.quote import quote, quote_name

MAX_NEW_TOKENS = 2048
MAX_PROBLEMS = 5  # problems listed in one message; a body of many bad fields names the first few
# Every request body: unknown fields refused, numbers finite (NaN and Infinity compare false with
# every bound, so a range alone lets them through). Numeric strings stay accepted as numbers, as
# older clients send them; booleans must be JSON booleans (StrictBool): "yes", "off" or 1 are
# refused rather than guessed at.
REQUEST_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


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


class InferenceRequest(BaseModel):
    """POST /inference/<model> and /predictions/<model>. Numeric strings are accepted as numbers."""

    model_config = REQUEST_CONFIG

    text: PromptText
    temperature: Temperature = 1.0
    top_k: Int | None = Field(None, ge=1, le=MAX_TOP_K)
    top_p: TopP = 1.0
    max_tokens: Int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    stop_sequence: Union[StopText, list[StopText], None] = None
    return_prompt: StrictBool = False
    seed: Seed | None = None
    repetition_penalty: RepetitionPenalty = 1.0
    ignore_eos: StrictBool = False  # generate exactly max_tokens, as benchmark tools expect
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

    def sampling(self, max_tokens: int, defaults: dict):
        """The backend's SamplingParams for this request; defaults for the fields left out."""
        fields = dict(temperature=self.temperature, top_k=self.top_k or 0, top_p=self.top_p,
                      repetition_penalty=self.repetition_penalty)
        return SamplingParams(max_tokens=max_tokens, seed=self.seed, stop=self.stops(),
                              return_prompt=self.return_prompt, ignore_eos=self.ignore_eos,
                              **{**fields, **defaults})


def _either(*names: str, **field):
    return Field(validation_alias=AliasChoices(*names), **field)


class GenerateRequest(BaseModel):
    """The body of POST /generate; null means "not given" for every field."""

    model_config = REQUEST_CONFIG

    text: PromptText = _either("text", "prompt")
    max_tokens: Int | None = _either("max_tokens", "max_new_tokens", default=None, ge=1,
                                     le=MAX_NEW_TOKENS)
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    top_k: Int = Field(0, ge=0, le=MAX_TOP_K)  # 0: off
    repetition_penalty: RepetitionPenalty = 1.0
    do_sample: StrictBool = True  # false: greedy, whatever the temperature
    num_samples: Int = _either("num_samples", "num_return_sequences", default=1, ge=1,
                               le=MAX_SAMPLES)
    stop: StopList = Field(default_factory=list)
    eos_token_ids: list[Int] = Field(default_factory=list, max_length=MAX_EXTRA_EOS)
    max_input_tokens: Int | None = Field(None, ge=1)
    seed: Seed | None = None
    stream: StrictBool = False

    _drop_nulls = model_validator(mode="before")(drop_nulls)

    @field_validator("eos_token_ids")
    @classmethod
    def _token_ids(cls, ids: list[int]) -> list[int]:
        if any(i < 0 for i in ids):
            raise ValueError("token ids are >= 0")
        return ids


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
