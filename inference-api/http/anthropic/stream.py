"""A Messages API answer streamed as Anthropic's events: message_start, then per content block
content_block_start, its deltas and content_block_stop, then message_delta and message_stop."""
from __future__ import annotations

from typing import Iterator

from inference_api.http.conversation import reply_pieces
from inference_api.http.errors import anthropic_error_type
from inference_api.http.samples import Answer, Sample, sse_event

from .answers import stop_of, tool_use_block, usage


def event(payload: dict) -> bytes:
    """An event named by its payload's type, as Anthropic sends them."""
    return sse_event(payload, payload["type"])


def message_events(engine, answer: Answer, head: dict, prompt_tokens: int,
                   tools: bool) -> Iterator[bytes]:
    """Every event of the streamed message; an error event instead of the end on a failure."""
    yield event({"type": "message_start", "message": {
        **head, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 0}}})
    yield event({"type": "ping"})
    blocks = -1  # index of the open content block
    text_open = called = False
    for piece in reply_pieces(engine, answer, tools):
        if piece.kind == "failed":
            yield failure(piece.sample)
            return
        if piece.kind == "text":
            if not text_open:
                blocks, text_open = blocks + 1, True
                yield event({"type": "content_block_start", "index": blocks,
                             "content_block": {"type": "text", "text": ""}})
            yield event({"type": "content_block_delta", "index": blocks,
                         "delta": {"type": "text_delta", "text": piece.text}})
        elif piece.kind == "call":
            if blocks >= 0:
                yield event({"type": "content_block_stop", "index": blocks})
            blocks, text_open, called = blocks + 1, False, True
            yield event({"type": "content_block_start", "index": blocks,
                         "content_block": tool_use_block(piece.call_id, piece.name, {})})
        elif piece.kind == "arguments":
            yield event({"type": "content_block_delta", "index": blocks,
                         "delta": {"type": "input_json_delta", "partial_json": piece.text}})
        elif piece.kind == "end":
            if blocks >= 0:
                yield event({"type": "content_block_stop", "index": blocks})
            stop_reason, stop_sequence = stop_of(piece.sample, called)
            yield event({"type": "message_delta",
                         "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                         "usage": usage(prompt_tokens, piece.sample)})
            yield event({"type": "message_stop"})


def failure(sample: Sample) -> bytes:
    """The error event that ends a stream whose generation failed (no message_stop follows)."""
    if sample.retry_after is not None:
        status, message = 503, f"the generation was interrupted: {sample.error}"
    else:
        status, message = 500, f"the generation failed: {sample.error}"
    return event({"type": "error", "error": {"type": anthropic_error_type(status),
                                             "message": message}})
