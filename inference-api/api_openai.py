"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions and /v1/chat/completions."""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from importlib import metadata

from flask import Blueprint, g, jsonify, request

from .answers import (failure_event, open_answer, run_to_end, sample_params, sse_event,
                      sse_response, text_batches)
from .grammar import grammar_for_gbnf, grammar_for_json_schema, grammar_for_response_format
from .link import Job
from .logprob_shapes import LogprobShaper
from .prompts import ChatTemplateError, PromptTooLong
from .protocol import FINISH_EOS, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP
from .quote import quote, quote_name
from .schemas_openai import ChatRequest, CompletionRequest, describe_openai_error
from .tool_stream import ToolStream, parse_answer
from .tools import (answer_schema, prepare_turns, template_supports_tools, template_turns,
                    tool_prompt, with_system_text)
from .web import ApiError, current_frontend, validated

openai = Blueprint("openai", __name__)
log = logging.getLogger("inference_api.requests")
MAX_IGNORED_NAMED = 20  # unknown fields named in the header; a hostile body may send thousands
STARTED = int(time.time())
# OpenAI knows no "eos": the model ending its answer is a "stop", as a stop string is.
FINISH_REASONS = {FINISH_STOP: "stop", FINISH_EOS: "stop", FINISH_LENGTH: "length"}
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@openai.route("/v1/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest: str):
    """Any other /v1 path: a 404 in OpenAI's shape, as OpenAI answers it."""
    raise ApiError(404, f"Invalid URL ({request.method} /v1/{quote_name(rest)})",
                   code="unknown_url")


@openai.get("/v1/models")
def models():
    """The one served model."""
    return jsonify(object="list", data=[_model_card()])


@openai.get("/v1/models/<path:model_id>")
def model(model_id: str):
    """The served model by its id, or a 404."""
    _check_model(model_id)
    return jsonify(_model_card())


@openai.post("/v1/completions")
def completions():
    """Continue each prompt as given."""
    frontend, body = _read(CompletionRequest)
    encoder = frontend.require_ready()
    prompts = []
    for index, prompt in enumerate(body.prompt):
        try:
            if isinstance(prompt, str):
                prompts.append((prompt, encoder.encode(prompt)))
            else:  # token ids, as given: their text is for the stop strings' context only
                prompts.append((encoder.decode(prompt), list(prompt)))
        except PromptTooLong as exc:
            raise ApiError(400, str(exc), param="prompt",
                           code="context_length_exceeded") from None
        except ValueError as exc:  # an id outside the vocabulary
            raise ApiError(400, f"prompt {index}: {exc}", param="prompt") from None
    if body.wanted_tokens == 0 and not (body.echo and body.logprobs is not None):
        raise ApiError(400, "max_tokens 0 is only allowed with echo and logprobs (to score the "
                            "prompt)", param="max_tokens")
    scored = body.logprobs if body.echo else None
    fields = dict(logprobs=body.logprobs, prompt_logprobs=scored, return_prompt=body.echo,
                  grammar=_grammar(body))
    return _answer(frontend, body, prompts, chat=False, fields=fields)


@openai.post("/v1/chat/completions")
def chat_completions():
    """The assistant's next turn in the conversation, through the model's chat template."""
    frontend, body = _read(ChatRequest)
    encoder = frontend.require_ready()
    choice, parallel = body.effective_tool_choice, body.parallel_tool_calls
    turns, tools = _chat_turns(encoder, body, choice, parallel)
    try:
        text = encoder.chat_text(turns, tools=tools)
        ids = encoder.encode_chat_text(text)
    except ChatTemplateError as exc:
        raise ApiError(400, str(exc), param="messages") from None
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from None
    schema, grammar = answer_schema(body.tools, choice, parallel), _grammar(body)
    if schema is not None and grammar is not None:
        raise ApiError(400, "a structured output (response_format) cannot be combined with "
                            "tools unless tool_choice is \"none\"", param="response_format")
    if schema is not None:
        try:
            grammar = grammar_for_json_schema(schema, "tools")
        except ValueError as exc:
            raise ApiError(400, str(exc), param="tools") from None
    fields = dict(logprobs=(body.top_logprobs or 0) if body.logprobs else None, grammar=grammar)
    return _answer(frontend, body, [(text, ids)], chat=True, fields=fields,
                   tools=schema is not None)


def _chat_turns(encoder, body, choice, parallel) -> tuple[list[dict], list[dict] | None]:
    """The turns for the template, and the tools for templates with their own tool syntax.

    Templates without it (the bundled model's) get the tools described in the system message
    and the tool history as plain turns: the generic format of tools.py.
    """
    turns = [m.turn() for m in body.messages]
    if template_supports_tools(encoder.info.get("chat_template")):
        turns = with_system_text(template_turns(turns),
                                 tool_prompt(body.tools, choice, parallel, listed=False))
        listed = [t.model_dump(exclude_none=True) for t in body.tools] if choice != "none" \
            else None
        return turns, listed
    return prepare_turns(turns, body.tools, choice, parallel, encoder.renders_tool_role), None


def _grammar(body) -> str | None:
    """The grammar a structured output asks for (None for free text); a 400 naming the field."""
    given = [name for name in ("json_schema", "grammar", "response_format")
             if getattr(body, name, None) is not None]
    if len(given) > 1:
        raise ApiError(400, f"give one of {', '.join(given)}, not several", param=given[1])
    for name, compile_field in (("json_schema", grammar_for_json_schema),
                                ("grammar", grammar_for_gbnf),
                                ("response_format", grammar_for_response_format)):
        value = getattr(body, name, None)
        if value is not None:
            try:
                return compile_field(value)
            except ValueError as exc:  # the message names the field
                raise ApiError(400, str(exc), param=name) from None
    return None


def _model_card() -> dict:
    frontend = current_frontend()
    link = frontend.link
    context = link.info.get("max_seq_len", frontend.config.max_seq_len) if link else \
        frontend.config.max_seq_len
    return {"id": frontend.config.model_id, "object": "model", "created": STARTED,
            "owned_by": "inference-api", "max_model_len": context}


def _fingerprint(frontend) -> str:
    """fp_ and a hash of what decides the answers: model, dtype, device, server version."""
    info = frontend.link.info if frontend.link else {}
    try:
        version = metadata.version("inference-api")
    except metadata.PackageNotFoundError:
        version = "unknown"
    parts = [frontend.config.model_id, str(info.get("dtype")), str(info.get("device")), version]
    return "fp_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def _check_model(model_id: str) -> None:
    served = current_frontend().config.model_id
    if model_id != served:
        raise ApiError(404, f"The model {quote(model_id)} does not exist; this server serves "
                               f"{served!r}", param="model", code="model_not_found")


def _read(schema):
    """The Frontend and the validated body; a 400 naming the parameter when it is not valid.

    Fields OpenAI does not have are ignored, as vLLM does, and named in a log line and the
    X-Ignored-Fields header; with STRICT_FIELDS=1 they are refused instead.
    """
    frontend = current_frontend()
    context = None if frontend.config.strict_fields else {"ignored": []}
    body = validated(schema, describe_openai_error, context)
    if context and context["ignored"]:
        g.ignored_fields = context["ignored"]
        log.info("request %s ignored unknown fields: %s", g.request_id,
                 _named(context["ignored"]))
    _check_model(body.model)
    return frontend, body


def _named(fields: list[str]) -> str:
    """Field names as a JSON list (escaped: safe in a header), the first few of many."""
    named = json.dumps([quote_name(f, 40) for f in fields[:MAX_IGNORED_NAMED]])
    return named + (f" and {len(fields) - MAX_IGNORED_NAMED} more"
                    if len(fields) > MAX_IGNORED_NAMED else "")


@openai.after_request
def _name_ignored_fields(response):
    """The X-Ignored-Fields header on answers whose request had unknown fields."""
    ignored = g.get("ignored_fields")
    if ignored:
        response.headers["X-Ignored-Fields"] = _named(ignored)
    return response


def _answer(frontend, body, prompts: list[tuple[str, list[int]]], chat: bool, fields: dict,
            tools: bool = False):
    """Open n sessions per prompt, then answer in one piece or as a stream of chunks."""
    vocab = frontend.encoder.vocab_size
    outside = [key for key in body.logit_bias or {} if int(key) >= vocab]
    if outside:
        raise ApiError(400, f"logit_bias: token id {outside[0]} is outside the vocabulary "
                            f"(0..{vocab - 1})", param="logit_bias")
    jobs = []
    for text, ids in prompts:
        if not ids:
            raise ApiError(400, "the prompt has no tokens", param="prompt")
        default = frontend.context_len if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
        max_tokens = frontend.fit_max_tokens(len(ids), body.wanted_tokens, default)
        jobs += [Job(ids, params, text) for params in sample_params(
            body.n, body.seed, **body.sampling_fields(max_tokens, frontend.defaults_for(body)),
            **fields)]
    answer = open_answer(frontend, jobs)
    prompt_tokens = sum(len(ids) for _, ids in prompts)  # each prompt once, as OpenAI counts
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": frontend.config.model_id,
            "system_fingerprint": _fingerprint(frontend)}
    shaper = LogprobShaper(frontend.encoder.token_bytes, [ids for _, ids in prompts
                                                          for _ in range(body.n)],
                           chat, fields.get("logprobs") is not None)
    if body.stream:
        return sse_response(_events(frontend, answer, head, chat, body.include_usage,
                                    prompt_tokens, body.n, shaper, tools))
    samples = run_to_end(frontend, answer)
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


def _events(frontend, answer, head: dict, chat: bool, include_usage: bool, prompt_tokens: int,
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
    for index, text, reason, error in text_batches(frontend, answer):
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
            yield failure_event(error)  # the openai client raises on it
            return
        finish = FINISH_REASONS.get(reason)
        if streams is not None:  # tool calls and content as OpenAI streams them
            yield from _tool_chunks(chunk, index, streams[index], text, finish, logprobs)
        elif text or reason is not None:
            yield chunk(index, text, finish, logprobs=logprobs)
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": _usage(prompt_tokens, answer.samples, n)})
    yield sse_event("[DONE]")
