"""The parts of a Messages API answer that the whole and the streamed answer share."""
from __future__ import annotations

import secrets

from inference_api.http.samples import Sample
from inference_api.process_messages import FINISH_EOS, FINISH_LENGTH, FINISH_STOP


def new_message_id() -> str:
    """An id for a message, in Anthropic's style."""
    return "msg_" + secrets.token_hex(12)


def tool_use_block(call_id: str, name: str, arguments: dict) -> dict:
    """A tool_use content block; the generic format's call id in Anthropic's style."""
    return {"type": "tool_use", "id": "toolu_" + call_id.removeprefix("call_"), "name": name,
            "input": arguments}


def stop_of(sample: Sample, called: bool) -> tuple[str | None, str | None]:
    """(stop_reason, stop_sequence) of a finished sample."""
    if sample.finish_reason == FINISH_LENGTH:
        return "max_tokens", None
    if called:
        return "tool_use", None
    if sample.finish_reason == FINISH_STOP:
        return "stop_sequence", sample.stop
    return ("end_turn" if sample.finish_reason == FINISH_EOS else None), None


def usage(prompt_tokens: int, sample: Sample) -> dict:
    """Anthropic's usage: input_tokens counts the prompt tokens not read from the cache."""
    cached = sample.record.cached_tokens
    return {"input_tokens": prompt_tokens - cached, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": sample.completion_tokens}
