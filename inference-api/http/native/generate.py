"""POST /generate: one JSON answer with every sample, or its server-sent events."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from inference_api.http.errors import ApiError
from inference_api.http.fields import describe_validation_error
from inference_api.http.plumbing import current_engine, validated
from inference_api.http.samples import (failure_event, open_answer, run_to_end, sample_params,
                                        sse_event, sse_response, text_batches)
from inference_api.process_messages import FINISH_ERROR
from inference_api.sampling_params import check_token_ids
from inference_api.serving.backend_link import Job
from inference_api.serving.prompts import PromptTooLong

from .protocol import GenerateRequest

generate = Blueprint("generate", __name__)


@generate.post("/generate")
def generate_text():
    """Generate num_samples continuations of the text as given."""
    engine = current_engine()
    body = validated(GenerateRequest, describe_validation_error)
    encoder = engine.require_ready()
    try:
        # With max_input_tokens a long prompt is cut to its end, not refused: tokenize it whole.
        prompt_ids = encoder.encode(body.text, bounded=body.max_input_tokens is None)
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), code="context_length_exceeded") from None
    if body.max_input_tokens is not None:
        prompt_ids = prompt_ids[-body.max_input_tokens:]  # the end of a prompt matters most
    if not prompt_ids:
        raise ApiError(400, "the prompt has no tokens")
    vocab = engine.link.info.get("vocab_size")
    if vocab is not None:
        try:
            check_token_ids("eos_token_ids", body.eos_token_ids, vocab)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    max_tokens = engine.fit_max_tokens(len(prompt_ids), body.max_tokens)
    fields = {**dict(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                     repetition_penalty=body.repetition_penalty), **engine.defaults_for(body)}
    if not body.do_sample:
        fields["temperature"] = 0.0
    params = sample_params(body.num_samples, body.seed, max_tokens=max_tokens,
                           stop=tuple(body.stop),
                           eos_token_ids=tuple(body.eos_token_ids), **fields)
    answer = open_answer(engine, [Job(prompt_ids, p, body.text) for p in params])
    created = time.time()
    if body.stream:
        return sse_response(_events(engine, answer, body.text, len(prompt_ids), created))
    samples = run_to_end(engine, answer)
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


def _events(engine, answer, prompt: str, prompt_tokens: int, created: float):
    """An event per batch of a sample's text, then the summary (the non-streamed answer)."""
    samples = answer.samples
    for index, text, reason, _ in text_batches(engine, answer):
        if reason == FINISH_ERROR:
            if text:
                yield sse_event({"index": index, "text": text, "finish_reason": None,
                                 "generated_tokens": samples[index].completion_tokens})
            yield failure_event(samples[index])
            return
        yield sse_event({"index": index, "text": text, "finish_reason": reason,
                         "generated_tokens": samples[index].completion_tokens})
    yield sse_event(_summary(samples, prompt, prompt_tokens, created))
