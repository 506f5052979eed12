"""What the chat-like APIs share (OpenAI's chat completions and Responses, Anthropic's
Messages): a conversation's turns and tools made into a prompt, one generation opened, and its
answer read back as text and tool calls, whole or as it streams.

Turns are the chat template's dicts ({"role", "content", "tool_calls", "tool_call_id"}, tool
calls in OpenAI's chat shape), so each API only translates its own items into them. Tools go
through serving's generic format (tool_format, tool_stream) and structured outputs through its
grammars, as on /v1/chat/completions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from inference_api.process_messages import FINISH_ERROR
from inference_api.serving.backend_link import Job
from inference_api.serving.grammars import grammar_for_json_schema
from inference_api.serving.prompts import PromptEncoder, PromptTooLong
from inference_api.serving.templates import ChatTemplateError
from inference_api.serving.tool_format import (ToolUse, answer_schema, prepare_turns,
                                               template_supports_tools, template_turns,
                                               tool_prompt, with_system_text)
from inference_api.serving.tool_stream import ToolStream, parse_answer

from .errors import ApiError
from .samples import Answer, Sample, open_answer, run_to_end, sample_params, text_batches


def prompt_of(encoder: PromptEncoder, turns: list[dict], use: ToolUse, param: str,
              tools: list[dict] | None = None) -> tuple[str, list[int]]:
    """The prompt text and ids of the turns with the tools (a 400 naming `param` when the
    template refuses them or they cannot fit the context).

    Templates with their own tool syntax are given the tools (those the request lists, in chat's
    {"type": "function", "function": ...} shape; by default those it may call now); others (the
    bundled model's) get them described in the system message and the tool history as plain
    turns: the generic format of tool_format.
    """
    if template_supports_tools(encoder.info.get("chat_template")):
        turns = with_system_text(template_turns(turns), tool_prompt(use, listed=False))
        listed = None if not use.functions else tools or [
            {"type": "function", "function": f} for f in use.functions]
    else:
        turns, listed = prepare_turns(turns, use, encoder.renders_tool_role), None
    try:
        text = encoder.chat_text(turns, tools=listed)
        return text, encoder.encode_chat_text(text)
    except ChatTemplateError as exc:
        raise ApiError(400, str(exc), param=param) from None
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), param=param, code="context_length_exceeded") from None


def answer_grammar(use: ToolUse, grammar: str | None, format_param: str) -> tuple[str | None,
                                                                                    bool]:
    """(the grammar of the answer, whether it is in the tools' format): the tools' schema when
    tools are on, else the structured output's grammar (None: free text)."""
    schema = answer_schema(use)
    if schema is None:
        return grammar, False
    if grammar is not None:
        raise ApiError(400, "a structured output cannot be combined with tools unless the tool "
                            "choice is none", param=format_param)
    try:
        return grammar_for_json_schema(schema, "tools"), True
    except ValueError as exc:
        raise ApiError(400, str(exc), param="tools") from None


def sampling_of(engine, body, names: tuple[str, ...]) -> dict:
    """The sampling fields of a request whose API names only some of them: those it set, and the
    model's defaults (generation_config) for every other, as on the chat route."""
    chosen = {name: getattr(body, name) for name in names}
    given = {name: value for name, value in chosen.items() if name in body.model_fields_set}
    return {**chosen, **engine.sampling_defaults, **given}


def open_one(engine, text: str, ids: list[int], wanted_tokens: int | None, seed: int | None,
             model: str, **fields) -> Answer:
    """One generation of the prompt by the served model or adapter named `model` (fields:
    SamplingParams' but max_tokens and seed)."""
    max_tokens = engine.fit_max_tokens(len(ids), wanted_tokens, engine.context_len)
    return open_answer(engine, [Job(ids, params, text, engine.adapter_for(model))
                                for params in sample_params(1, seed, max_tokens=max_tokens,
                                                            **fields)])


@dataclass
class Reply:
    """An answer read whole: its text, its tool calls (OpenAI's chat shape) and its sample."""

    content: str | None
    calls: list[dict]
    sample: Sample


def reply_whole(engine, answer: Answer, tools: bool) -> Reply:
    """The finished answer (an ApiError if its generation failed)."""
    [sample] = run_to_end(engine, answer)
    if not tools:
        return Reply(sample.text, [], sample)
    content, calls = parse_answer(sample.text)
    return Reply(content, calls, sample)


@dataclass
class Piece:
    """A piece of a streamed answer.

    kind "text": more text. "call": a tool call begins (index, call_id, name). "arguments":
    more of call `index`'s arguments' JSON text. "end": the answer is over (sample says how).
    "failed": its generation failed (sample.error says why); nothing follows.
    """

    kind: str
    text: str = ""
    index: int = 0
    call_id: str = ""
    name: str = ""
    sample: Sample | None = None


def reply_pieces(engine, answer: Answer, tools: bool) -> Iterator[Piece]:
    """The answer's pieces as they are generated; ends quietly when the client leaves (the
    generation is then cancelled)."""
    stream = ToolStream() if tools else None
    for _, text, reason, _ in text_batches(engine, answer):
        sample = answer.samples[0]
        if reason == FINISH_ERROR:
            if text and stream is None:
                yield Piece("text", text)
            yield Piece("failed", sample=sample)
            return
        if stream is None:
            if text:
                yield Piece("text", text)
        else:
            deltas = stream.feed(text) if text else []
            if reason is not None:
                deltas += stream.finish()
            yield from _pieces_of(deltas)
        if reason is not None:
            yield Piece("end", sample=sample)


def _pieces_of(deltas: list[dict]) -> Iterator[Piece]:
    """The tool stream's chat deltas as pieces."""
    for delta in deltas:
        if delta.get("content"):
            yield Piece("text", delta["content"])
        for part in delta.get("tool_calls", ()):
            function = part["function"]
            if "id" in part:
                yield Piece("call", index=part["index"], call_id=part["id"],
                            name=function["name"])
            if function.get("arguments"):
                yield Piece("arguments", function["arguments"], index=part["index"])
