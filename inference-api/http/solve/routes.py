"""POST /solve/math and /solve/coding: a problem in its prompt template, the model's solution,
and the answer or code read from it; one JSON answer, or the solution's text as server-sent
events and that answer as the last event."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from inference_api.http.errors import ApiError
from inference_api.http.fields import describe_validation_error
from inference_api.http.plumbing import engine_for, not_served, validated
from inference_api.http.samples import (Answer, Sample, failure_event, open_answer, run_to_end,
                                        sample_params, sse_event, sse_response, text_batches)
from inference_api.process_messages import FINISH_ERROR
from inference_api.serving.backend_link import Job
from inference_api.serving.prompts import PromptTooLong
from inference_api.serving.templates import ChatTemplateError

from .extract import first_code, math_answer
from .prompts import template_for, user_turn
from .protocol import DEFAULT_MAX_NEW_TOKENS, SolveRequest

solve = Blueprint("solve", __name__)
# Each kind of problem: the answer's field and how it is read from the solution.
EXTRACTED = {"math": ("answer", math_answer), "coding": ("code", first_code)}


@solve.post("/solve/math")
def solve_math():
    """A worked solution of a math problem and its final answer."""
    return _solve("math")


@solve.post("/solve/coding")
def solve_coding():
    """A solution of a programming problem and its code."""
    return _solve("coding")


def _solve(kind: str):
    body = validated(SolveRequest, describe_validation_error)
    engine = engine_for(body.model, not_served)  # a model's name, or a LoRA adapter's
    model = body.model if body.model is not None else engine.config.model_id
    encoder = engine.require_ready()
    try:
        text = encoder.chat_text([user_turn(template_for(kind, engine.config), body.problem)])
        ids = encoder.encode_chat_text(text)
    except ChatTemplateError as exc:
        raise ApiError(400, str(exc)) from None
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), code="context_length_exceeded") from None
    max_tokens = engine.fit_max_tokens(len(ids), body.max_new_tokens, DEFAULT_MAX_NEW_TOKENS)
    # The model's own top_k and top_p apply when the temperature lets them matter.
    fields = {**engine.sampling_defaults, "temperature": body.temperature}
    [params] = sample_params(1, None, max_tokens=max_tokens, **fields)
    created = time.time()
    answer = open_answer(engine, [Job(ids, params, text, engine.adapter_for(model))])
    if body.stream:
        return sse_response(_events(engine, answer, kind, body.problem, len(ids), created))
    [sample] = run_to_end(engine, answer)
    return jsonify(_summary(kind, body.problem, sample, len(ids), created))


def _summary(kind: str, problem: str, sample: Sample, prompt_tokens: int,
             created: float) -> dict:
    """The whole answer: the solution, what was read from it, the time it took, the tokens."""
    field, extract = EXTRACTED[kind]
    completion = sample.completion_tokens
    return {"problem": problem, "solution": sample.text, field: extract(sample.text),
            "generation_time": round(time.time() - created, 6),
            "finish_reason": sample.finish_reason,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion}}


def _events(engine, answer: Answer, kind: str, problem: str, prompt_tokens: int,
            created: float):
    """An event per batch of the solution's text, then the whole answer (as not streamed); a
    failed generation ends with the error event instead."""
    [sample] = answer.samples
    for _, text, reason, _ in text_batches(engine, answer):
        if text:
            yield sse_event({"text": text})
        if reason == FINISH_ERROR:
            yield failure_event(sample)
            return
    yield sse_event(_summary(kind, problem, sample, prompt_tokens, created))
