"""The native routes' bodies and answers, as pydantic models: /inference, /predictions, /generate.

The request models validate what the routes take; the answer models describe what they give in
/openapi.json (the fuzzing test checks every answer against them).
"""
from __future__ import annotations

from typing import Union

from pydantic import AliasChoices, BaseModel, Field, StrictBool, field_validator, model_validator

from inference_api.http.fields import (REQUEST_CONFIG, Int, PromptText, RepetitionPenalty, Seed,
                                       StopList, StopText, Temperature, TopP, drop_nulls)
from inference_api.sampling_params import (MAX_EXTRA_EOS, MAX_SAMPLES, MAX_STOPS, MAX_TOP_K,
                                           SamplingParams)

MAX_NEW_TOKENS = 2048


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


class NativeError(BaseModel):
    """The error of the native routes, /generate and /health."""

    status_code: int
    message: str


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
