"""Request bodies of the OpenAI routes and of /tokenize and /detokenize, validated with pydantic."""
from __future__ import annotations

from typing import Annotated

from pydantic import (BaseModel, Field, StrictBool, StrictInt, ValidationError, field_validator,
                      model_validator)

from inference_api.http.fields import (REQUEST_CONFIG, Float, Int, MinP, Penalty, RepetitionPenalty,
                                       StopList, TopP, drop_nulls, error_text, field_path,
                                       join_problems)
from inference_api.quote import quote
from inference_api.sampling_params import MAX_LOGIT_BIAS, MAX_SAMPLES, MAX_TOP_K, MAX_TOP_LOGPROBS

from .protocol_messages import ChatMessage, ToolFields

# Token counts are 32-bit integers in OpenAI's API; no context comes near, and a count of
# thousands of digits would otherwise be spelled out whole in the context-length error.
MAX_COUNT = 2**31 - 1
MAX_PROMPT_IDS = 1 << 20  # token ids in one prompt: more than any context holds

MAX_COMPLETION_LOGPROBS = 5  # alternatives per token on /v1/completions, as OpenAI allows
# OpenAI parameters this server does not implement, with the values that ask for nothing and so
# are accepted (null is accepted for every parameter). Any other value is refused with a 400;
# fields OpenAI does not have are ignored and named in the X-Ignored-Fields header instead.
NO_OP_VALUES = {
    "best_of": (1,), "suffix": ("",), "functions": ([],), "store": (False,), "metadata": ({},),
}
UNSUPPORTED = frozenset(NO_OP_VALUES) | {"function_call", "audio", "modalities", "prediction"}


class StreamOptions(BaseModel):
    """stream_options: include_usage adds a last chunk with the usage of the whole request."""

    model_config = REQUEST_CONFIG

    include_usage: StrictBool = False
    include_obfuscation: StrictBool | None = None  # padding against side channels; not needed here


class _OpenAIRequest(BaseModel):
    """The fields both routes share; null means "not given" for every field."""

    model_config = REQUEST_CONFIG

    model: str
    max_tokens: Int | None = Field(None, ge=1, le=MAX_COUNT)
    max_completion_tokens: Int | None = Field(None, ge=1, le=MAX_COUNT)
    # OpenAI's documented range, narrower than what the sampler takes (params.MAX_TEMPERATURE):
    # clients written against OpenAI expect a 400 above it.
    temperature: Float = Field(1.0, ge=0, le=2)
    top_p: TopP = 1.0
    top_k: Int = Field(0, ge=-1, le=MAX_TOP_K)  # -1 and 0: off
    min_p: MinP = 0.0
    n: Int = Field(1, ge=1, le=MAX_SAMPLES)
    stop: StopList = Field(default_factory=list)
    seed: Int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # a signed 64-bit integer, as vLLM
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    repetition_penalty: RepetitionPenalty = 1.0
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted for compatibility; not used
    ignore_eos: StrictBool = False
    min_tokens: Int = Field(0, ge=0, le=MAX_COUNT)
    logit_bias: dict[str, Float] | None = Field(None, max_length=MAX_LOGIT_BIAS)
    response_format: dict | None = None  # checked by grammar.grammar_for_response_format
    # vLLM's structured outputs, new and old; each checked by structured.request_grammar
    structured_outputs: dict | None = None
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_range(cls, bias):
        for key, value in (bias or {}).items():
            if not (key.isascii() and key.isdigit() and len(key) <= 9):
                raise ValueError(f"keys must be token ids, not {quote(key)}")
            if not -100 <= value <= 100:
                raise ValueError(f"the bias of token {key} is {value}: expected -100..100")
        return bias

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls_no_ops_and_unknown(cls, body, info):
        """Nulls and no-op values go; unknown fields too when the context collects "ignored"."""
        body = drop_nulls(body)
        if not isinstance(body, dict):
            return body
        ignored = (info.context or {}).get("ignored")
        kept = {}
        for key, value in body.items():
            if key in cls.model_fields:
                kept[key] = value
            elif _is_no_op(key, value):
                continue
            elif ignored is not None and key not in UNSUPPORTED:
                ignored.append(key)
            else:  # refused by extra="forbid", with a message naming it
                kept[key] = value
        return kept

    @field_validator("stream_options")
    @classmethod
    def _only_with_stream(cls, options, info):
        if options is not None and not info.data.get("stream"):
            raise ValueError("is only allowed when stream is true")
        return options

    @property
    def wanted_tokens(self) -> int | None:
        """max_completion_tokens, else max_tokens, else None (the route's default)."""
        return self.max_tokens if self.max_completion_tokens is None else \
            self.max_completion_tokens

    @property
    def include_usage(self) -> bool:
        """True when a stream should end with a usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def sampling_fields(self, max_tokens: int, defaults: dict) -> dict:
        """The SamplingParams fields of this request (all but the seed); defaults for the
        fields left out."""
        chosen = {**dict(temperature=self.temperature, top_k=max(self.top_k, 0),
                         top_p=self.top_p, min_p=self.min_p,
                         repetition_penalty=self.repetition_penalty), **defaults}
        return dict(max_tokens=max_tokens, **chosen,
                    presence_penalty=self.presence_penalty,
                    frequency_penalty=self.frequency_penalty, stop=tuple(self.stop),
                    ignore_eos=self.ignore_eos, min_tokens=self.min_tokens,
                    logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()))


def _is_no_op(key: str, value) -> bool:
    return any(value == ok and type(value) is type(ok) for ok in NO_OP_VALUES.get(key, ()))


TokenIds = Annotated[list[StrictInt], Field(min_length=1, max_length=MAX_PROMPT_IDS)]


class CompletionRequest(_OpenAIRequest):
    """POST /v1/completions."""

    # Each prompt is text or token ids, as OpenAI takes them: a string, a list of strings, a
    # list of ids, or a list of lists of ids.
    prompt: list[Annotated[str, Field(min_length=1)] | TokenIds] = Field(
        min_length=1, max_length=MAX_SAMPLES)
    logprobs: Int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: StrictBool = False
    max_tokens: Int | None = Field(None, ge=0, le=MAX_COUNT)  # 0 with echo: score the prompt
    json_schema: dict | None = None  # llama.cpp's: the answer follows this JSON schema
    grammar: str | None = None  # llama.cpp's: the answer follows this GBNF grammar

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_list(cls, prompt):
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt, list) and prompt and all(
                isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [prompt]  # one prompt of token ids
        if isinstance(prompt, list) and not all(
                isinstance(p, str) or (isinstance(p, list) and all(
                    isinstance(i, int) and not isinstance(i, bool) for i in p)) for p in prompt):
            raise ValueError("must be a string, a list of strings, a list of token ids or a "
                             "list of lists of token ids")
        return prompt


class ChatRequest(_OpenAIRequest, ToolFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: StrictBool = False
    top_logprobs: Int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, top, info):
        if top and not info.data.get("logprobs"):
            raise ValueError("needs logprobs set to true")
        return top


def describe_openai_error(exc: ValidationError) -> tuple[str, str | None, str | None]:
    """(message, param, code) of a validation error; the message names every field at fault."""
    parts, param, code = [], None, None
    for err in exc.errors(include_url=False):
        field = field_path(err)
        param = param or field
        if err["type"] == "extra_forbidden":
            code = code or "unsupported_parameter"
            parts.append(f"{field} is not supported by this server")
        elif err["type"] == "missing":
            parts.append(f"{field} is required")
        else:
            parts.append(f"{field}: {error_text(err)}" + (f" (got {quote(err['input'])})"
                                                          if err["type"] != "value_error" else ""))
    return join_problems(parts), param, code


MAX_TOKEN_IDS = 1 << 20  # more ids than any context; bounds the work of one request


class TokenizeRequest(BaseModel):
    """A prompt as /v1/completions takes it, or messages as /v1/chat/completions does."""

    model_config = REQUEST_CONFIG

    model: str | None = None
    prompt: str | None = None
    add_special_tokens: StrictBool = True
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: StrictBool = True

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, body):
        return drop_nulls(body)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    """Token ids to turn back into text."""

    model_config = REQUEST_CONFIG

    model: str | None = None
    tokens: list[Int] = Field(max_length=MAX_TOKEN_IDS)
