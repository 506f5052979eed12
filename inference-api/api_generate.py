"""POST /generate: one JSON answer with every sample, or its server-sent events."""
from __future__ import annotations

import time
from contextlib import closing

from flask import Blueprint, current_app, jsonify, request
from pydantic import (AliasChoices, BaseModel, Field, StrictBool, ValidationError, field_validator,
                      model_validator)

from .frontend import ApiError
from .params import MAX_EXTRA_EOS, MAX_STOPS, MAX_TOP_K
from .prompts import PromptTooLong
from .protocol import FINISH_ERROR
from .quote import quote
from .samples import (MAX_SAMPLES, open_samples, run_to_end, sample_params, sse_event,
                      sse_response, text_batches)
from .schemas import (MAX_NEW_TOKENS, REQUEST_CONFIG, Float, Int, PromptText, StopText,
                      describe_validation_error)

generate = Blueprint("generate", __name__)


def _either(*names: str, **field):
    return Field(validation_alias=AliasChoices(*names), **field)


class GenerateRequest(BaseModel):
    """The body of POST /generate; null means "not given" for every field."""

    model_config = REQUEST_CONFIG

    text: PromptText = _either("text", "prompt")
    max_tokens: Int | None = _either("max_tokens", "max_new_tokens", default=None, ge=1,
                                     le=MAX_NEW_TOKENS)
    temperature: Float = Field(1.0, ge=0, le=5)
    top_p: Float = Field(1.0, gt=0, le=1)
    top_k: Int = Field(0, ge=0, le=MAX_TOP_K)  # 0: off
    repetition_penalty: Float = Field(1.0, gt=0, le=10)
    do_sample: StrictBool = True  # false: greedy, whatever the temperature
    num_samples: Int = _either("num_samples", "num_return_sequences", default=1, ge=1,
                               le=MAX_SAMPLES)
    stop: list[StopText] = Field(default_factory=list, max_length=MAX_STOPS)
    eos_token_ids: list[Int] = Field(default_factory=list, max_length=MAX_EXTRA_EOS)
    max_input_tokens: Int | None = Field(None, ge=1)
    seed: Int | None = Field(None, ge=0, lt=2**63)
    stream: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, body):
        return {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body

    @field_validator("stop", mode="before")
    @classmethod
    def _one_or_many(cls, stop):
        return [stop] if isinstance(stop, str) else stop

    @field_validator("eos_token_ids")
    @classmethod
    def _token_ids(cls, ids: list[int]) -> list[int]:
        if any(i < 0 for i in ids):
            raise ValueError("token ids are >= 0")
        return ids


@generate.post("/generate")
def generate_text():
    """Generate num_samples continuations of the text as given."""
    from .server import frontend_of, read_json_object

    frontend = frontend_of(current_app)
    try:
        body = GenerateRequest.model_validate(read_json_object())
    except ValidationError as exc:
        raise ApiError(400, describe_validation_error(exc)) from None
    encoder = frontend.require_ready()
    try:
        # With max_input_tokens a long prompt is cut to its end, not refused: tokenize it whole.
        prompt_ids = encoder.encode(body.text, bounded=body.max_input_tokens is None)
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), code="context_length_exceeded") from None
    if body.max_input_tokens is not None:
        prompt_ids = prompt_ids[-body.max_input_tokens:]  # the end of a prompt matters most
    if not prompt_ids:
        raise ApiError(400, "the prompt has no tokens")
    vocab = frontend.link.info.get("vocab_size")
    too_big = [t for t in body.eos_token_ids if vocab is not None and t >= vocab]
    if too_big:
        raise ApiError(400, f"eos_token_ids={quote(too_big)}: token ids must be below the "
                            f"vocabulary size {vocab}")
    max_tokens = frontend.fit_max_tokens(len(prompt_ids), body.max_tokens)
    params = sample_params(body.num_samples, body.seed, max_tokens=max_tokens,
                           temperature=body.temperature if body.do_sample else 0.0,
                           top_k=body.top_k, top_p=body.top_p,
                           repetition_penalty=body.repetition_penalty, stop=tuple(body.stop),
                           eos_token_ids=tuple(body.eos_token_ids))
    samples = open_samples(frontend, [(prompt_ids, p, body.text) for p in params])
    created = time.time()
    if body.stream:
        return sse_response(_events(frontend, samples, body.text, len(prompt_ids), created))
    run_to_end(frontend, samples, request.environ)
    failed = next((s for s in samples if s.finish_reason == FINISH_ERROR), None)
    if failed is not None:
        raise ApiError(500, f"the generation failed: {failed.error}")
    return jsonify(_summary(samples, body.text, len(prompt_ids), created))


def _summary(samples, prompt: str, prompt_tokens: int, created: float) -> dict:
    """The whole answer: every sample's text, finish reason and token count, and the timings."""
    finished = time.time()
    return {"created": created, "finished": finished, "prompt": prompt,
            "prompt_tokens": prompt_tokens, "num_samples": len(samples),
            "responses": [{"index": i, "text": s.text, "finish_reason": s.finish_reason,
                           "generated_tokens": s.completion_tokens}
                          for i, s in enumerate(samples)],
            "generation_time": round(finished - created, 6)}


def _events(frontend, samples, prompt: str, prompt_tokens: int, created: float):
    """An event per batch of a sample's text, then the summary (the non-streamed answer)."""
    with closing(text_batches(frontend, samples, request.environ)) as batches:
        for index, text, reason, error in batches:
            if reason == FINISH_ERROR:
                if text:
                    yield sse_event({"index": index, "text": text, "finish_reason": None,
                                     "generated_tokens": samples[index].completion_tokens})
                yield sse_event({"status_code": 500, "message": f"the generation failed: {error}"})
                return
            yield sse_event({"index": index, "text": text, "finish_reason": reason,
                             "generated_tokens": samples[index].completion_tokens})
    yield sse_event(_summary(samples, prompt, prompt_tokens, created))
