"""A Responses API answer streamed as its typed events, each numbered (sequence_number):

    response.created, response.in_progress,
    per output item: response.output_item.added, then for a message response.content_part.added,
    response.output_text.delta..., response.output_text.done, response.content_part.done; for a
    function call response.function_call_arguments.delta..., ...arguments.done; then
    response.output_item.done,
    and response.completed (response.incomplete when max_output_tokens cut it), or
    response.failed when the generation failed.
"""
from __future__ import annotations

from typing import Callable, Iterator

from inference_api.http.conversation import Piece, reply_pieces
from inference_api.http.samples import Answer, sse_event

from .answers import (ResponseShape, call_item, finished_status, message_item, new_id,
                      text_part, usage)


class _Events:
    """Numbers the events and keeps the output items as they are made."""

    def __init__(self):
        self.number = 0
        self.output: list[dict] = []
        self.open: dict | None = None  # the item being streamed

    def __call__(self, kind: str, **fields) -> bytes:
        self.number += 1
        return sse_event({"type": kind, "sequence_number": self.number - 1, **fields}, kind)

    def add(self, item: dict) -> Iterator[bytes]:
        self.open = item
        self.output.append(item)
        yield self("response.output_item.added", output_index=len(self.output) - 1,
                   item=dict(item, content=[]) if item["type"] == "message" else dict(item))
        if item["type"] == "message":
            yield self("response.content_part.added", item_id=item["id"],
                       output_index=len(self.output) - 1, content_index=0, part=text_part(""))

    def more(self, piece: Piece) -> bytes:
        item, index = self.open, len(self.output) - 1
        if item["type"] == "message":
            item["content"][0]["text"] += piece.text
            return self("response.output_text.delta", item_id=item["id"], output_index=index,
                        content_index=0, delta=piece.text, logprobs=[])
        item["arguments"] += piece.text
        return self("response.function_call_arguments.delta", item_id=item["id"],
                    output_index=index, delta=piece.text)

    def close(self, status: str) -> Iterator[bytes]:
        item, index, self.open = self.open, len(self.output) - 1, None
        if item is None:
            return
        item["status"] = status
        if item["type"] == "message":
            part = item["content"][0]
            yield self("response.output_text.done", item_id=item["id"], output_index=index,
                       content_index=0, text=part["text"], logprobs=[])
            yield self("response.content_part.done", item_id=item["id"], output_index=index,
                       content_index=0, part=part)
        else:
            yield self("response.function_call_arguments.done", item_id=item["id"],
                       output_index=index, name=item["name"], arguments=item["arguments"])
        yield self("response.output_item.done", output_index=index, item=item)


def response_events(engine, answer: Answer, shape: ResponseShape, prompt_tokens: int,
                    tools: bool, keep: Callable[[dict], None]) -> Iterator[bytes]:
    """Every event of the streamed response; keep(response) stores the finished one."""
    events = _Events()
    yield events("response.created", response=shape("in_progress", []))
    yield events("response.in_progress", response=shape("in_progress", []))
    for piece in reply_pieces(engine, answer, tools):
        if piece.kind == "text":
            if events.open is None or events.open["type"] != "message":
                yield from events.close("completed")
                yield from events.add(message_item(new_id("msg"), "", "in_progress"))
            yield events.more(piece)
        elif piece.kind == "call":
            yield from events.close("completed")
            yield from events.add(call_item(new_id("fc"), piece.call_id, piece.name, "",
                                            "in_progress"))
        elif piece.kind == "arguments":
            yield events.more(piece)
        elif piece.kind == "failed":
            sample = piece.sample
            why = "interrupted" if sample.retry_after is not None else "failed"
            error = {"code": "server_error", "message": f"the generation {why}: {sample.error}"}
            yield events("response.failed", response=shape(
                "failed", events.output, usage(prompt_tokens, sample), error=error))
            return
        else:  # the end
            status, incomplete = finished_status(piece.sample)
            if not events.output:  # an empty answer is still a message
                yield from events.add(message_item(new_id("msg"), "", "in_progress"))
            yield from events.close(status)
            response = shape(status, events.output, usage(prompt_tokens, piece.sample),
                             incomplete)
            keep(response)
            yield events("response.completed" if status == "completed" else
                         "response.incomplete", response=response)
