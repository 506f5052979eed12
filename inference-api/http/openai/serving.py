"""The OpenAI routes' answers: their choices in one piece, or streamed as chunks."""
from __future__ import annotations

import hashlib
import time
import uuid
from importlib import metadata

from flask import jsonify

from inference_api.http.errors import ApiError
from inference_api.http.samples import (failure_event, open_answer, run_to_end, sample_params,
                                        sse_event, sse_response, text_batches)
from inference_api.process_messages import FINISH_EOS, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP
from inference_api.serving.backend_link import Job
from inference_api.serving.tool_stream import ToolStream, parse_answer

from .logprobs import LogprobShaper

# OpenAI knows no "eos": the model ending its answer is a "stop", as a stop string is.
FINISH_REASONS = {FINISH_STOP: "stop", FINISH_EOS: "stop", FINISH_LENGTH: "length"}
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def answer(engine, body, prompts: list[tuple[str, list[int]]], chat: bool, fields: dict,
            tools: bool = False):
    """Open n sessions per prompt, then answer in one piece or as a stream of chunks."""
    vocab = engine.encoder.vocab_size
    outside = [key for key in body.logit_bias or {} if int(key) >= vocab]
    if outside:
        raise ApiError(400, f"logit_bias: token id {outside[0]} is outside the vocabulary "
                            f"(0..{vocab - 1})", param="logit_bias")
    jobs, adapter = [], engine.adapter_for(body.model)  # None: the base model
    for text, ids in prompts:
        if not ids:
            raise ApiError(400, "the prompt has no tokens", param="prompt")
        default = engine.context_len if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
        max_tokens = engine.fit_max_tokens(len(ids), body.wanted_tokens, default)
        jobs += [Job(ids, params, text, adapter) for params in sample_params(
            body.n, body.seed, **body.sampling_fields(max_tokens, engine.defaults_for(body)),
            **fields)]
    answer = open_answer(engine, jobs)
    prompt_tokens = sum(len(ids) for _, ids in prompts)  # each prompt once, as OpenAI counts
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": body.model,  # an adapter's name, or the base's
            "system_fingerprint": fingerprint(engine)}
    shaper = LogprobShaper(engine.encoder.token_bytes, [ids for _, ids in prompts
                                                          for _ in range(body.n)],
                           chat, fields.get("logprobs") is not None)
    if body.stream:
        return sse_response(_events(engine, answer, head, chat, body.include_usage,
                                    prompt_tokens, body.n, shaper, tools))
    samples = run_to_end(engine, answer)
    choices = []
    for index, sample in enumerate(samples):
        finish = FINISH_REASONS.get(sample.finish_reason)
        logprobs = shaper.batch(index, sample.logprobs, sample.prompt_logprobs)
        if chat:
            message = {"role": "assistant", "content": sample.text, "refusal": None}
            if tools:  # the generic format's answer: a response, or tool calls
                message["content"], calls = parse_answer(sample.text)
                if calls:
                    message["tool_calls"] = calls
                    finish = "tool_calls" if finish == "stop" else finish
            choices.append({"index": index, "message": message, "logprobs": logprobs,
                            "finish_reason": finish})
        else:
            choices.append({"index": index, "text": sample.text, "logprobs": logprobs,
                            "finish_reason": finish})
    return jsonify(**head, choices=choices, usage=_usage(prompt_tokens, samples, body.n))


def _tool_chunks(chunk, index: int, stream: ToolStream, text: str, finish: str | None,
                 logprobs: dict | None):
    """The chunks of one batch of a tools answer: its deltas, then the finish if it ended."""
    deltas = stream.feed(text) if text else []
    if finish is not None:
        deltas += stream.finish()
    for delta in deltas:
        yield chunk(index, None, None, delta=delta, logprobs=logprobs)
        logprobs = None
    if finish is not None:
        called = stream.called and finish == "stop"
        yield chunk(index, None, "tool_calls" if called else finish, delta={}, logprobs=logprobs)
    elif logprobs is not None and not deltas:
        yield chunk(index, None, None, delta={}, logprobs=logprobs)


def _usage(prompt_tokens: int, samples, n: int) -> dict:
    """Token counts; a prompt's cached tokens are the fewest any of its n samples found."""
    completion = sum(s.completion_tokens for s in samples)
    cached = sum(min(s.record.cached_tokens for s in samples[i:i + n])
                 for i in range(0, len(samples), n))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _events(engine, answer, head: dict, chat: bool, include_usage: bool, prompt_tokens: int,
            n: int, shaper: LogprobShaper, tools: bool = False):
    """The stream's events: a chunk per batch of text, the usage chunk if asked, [DONE]."""
    head = dict(head, object="chat.completion.chunk" if chat else "text_completion")
    extra = {"usage": None} if include_usage else {}
    opened = set()  # choices whose first batch went out (it carries the prompt's logprobs)

    streams = [ToolStream() for _ in answer.samples] if tools else None

    def chunk(index: int, text: str | None, finish: str | None, role: bool = False,
              logprobs: dict | None = None, delta: dict | None = None) -> bytes:
        if chat:
            if delta is None:
                delta = {"role": "assistant", "content": ""} if role else (
                    {"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": logprobs,
                      "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs,
                      "finish_reason": finish}
        return sse_event({**head, "choices": [choice], **extra})

    if chat:  # OpenAI opens each choice with the role, before any token
        for index in range(len(answer.samples)):
            yield chunk(index, None, None, role=True)
    pending = {}  # per choice: log probabilities of tokens whose text is still held back
    for index, text, reason, _ in text_batches(engine, answer):
        sample = answer.samples[index]
        pending.setdefault(index, []).extend(sample.fresh_logprobs)
        logprobs = None
        if text or reason is not None:
            prompt_entries = None if index in opened else sample.prompt_logprobs
            opened.add(index)
            logprobs = shaper.batch(index, pending.pop(index), prompt_entries)
        if reason == FINISH_ERROR:
            if text:
                yield chunk(index, text, None, logprobs=logprobs)
            yield failure_event(sample)  # the openai client raises on it
            return
        finish = FINISH_REASONS.get(reason)
        if streams is not None:  # tool calls and content as OpenAI streams them
            yield from _tool_chunks(chunk, index, streams[index], text, finish, logprobs)
        elif text or reason is not None:
            yield chunk(index, text, finish, logprobs=logprobs)
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": _usage(prompt_tokens, answer.samples, n)})
    yield sse_event("[DONE]")


def fingerprint(engine) -> str:
    """fp_ and a hash of what decides the answers: model, dtype, device, server version."""
    info = engine.link.info if engine.link else {}
    try:
        version = metadata.version("inference-api")
    except metadata.PackageNotFoundError:
        version = "unknown"
    parts = [engine.config.model_id, str(info.get("dtype")), str(info.get("device")), version]
    if engine.config.batch_invariant:  # answers that do not depend on the batch are other bits
        parts.append("batch-invariant")
    return "fp_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
