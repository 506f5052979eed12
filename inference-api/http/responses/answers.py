"""What a Responses API answer is made of, whole or streamed: output items, usage, the response
object (in progress, completed, incomplete or failed)."""
from __future__ import annotations

import secrets

from inference_api.http.samples import Sample
from inference_api.process_messages import FINISH_LENGTH

from .protocol import NamedFunction, ResponsesRequest


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: resp_, msg_ or fc_ and hex."""
    return f"{prefix}_{secrets.token_hex(16)}"


def message_item(item_id: str, text: str, status: str) -> dict:
    """The assistant's text as an output message."""
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [text_part(text)] if text is not None else []}


def text_part(text: str) -> dict:
    """An output_text content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    """A function call as an output item."""
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def usage(prompt_tokens: int, sample: Sample | None) -> dict | None:
    """Tokens of the prompt (and those read from the cache) and of the answer."""
    if sample is None:
        return None
    output = sample.completion_tokens
    return {"input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": sample.record.cached_tokens},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output}


def finished_status(sample: Sample) -> tuple[str, dict | None]:
    """(status, incomplete_details) of a finished answer: incomplete when max_output_tokens
    cut it."""
    if sample.finish_reason == FINISH_LENGTH:
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


class ResponseShape:
    """The response object of one request, at each of its states."""

    def __init__(self, body: ResponsesRequest, response_id: str, created_at: int, model: str,
                 text_format: dict | None, sampling: dict):
        choice = body.tool_choice
        self.fields = {
            "id": response_id, "object": "response", "created_at": created_at,
            "background": False, "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens, "model": model,
            "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id, "store": body.store,
            # The values used: the model's defaults for those the request left out.
            "temperature": sampling["temperature"], "top_p": sampling["top_p"],
            "text": {"format": text_format or {"type": "text"}},
            "tool_choice": choice.model_dump() if isinstance(choice, NamedFunction) else choice,
            "tools": [t.model_dump() for t in body.tools], "truncation": "disabled",
            "metadata": body.metadata or {}, "user": body.user}

    def __call__(self, status: str, output: list[dict], usage_: dict | None = None,
                 incomplete: dict | None = None, error: dict | None = None) -> dict:
        """The response object in this state."""
        return {**self.fields, "status": status, "error": error,
                "incomplete_details": incomplete, "output": output, "usage": usage_}
