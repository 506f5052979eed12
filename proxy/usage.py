"""Generated tokens, counted from the answer the proxy relays (for PROXY_RATE_LIMIT_TPM).

- A JSON answer: its usage (`usage.completion_tokens` of OpenAI's routes and of /solve/*,
  `usage.output_tokens` of the Responses and Messages APIs, the sum of
  `responses[].generated_tokens` of /generate).
- A server-sent event stream: the last usage it carries (OpenAI's final chunk with
  `stream_options.include_usage`, Anthropic's `message_delta`, the Responses API's
  `response.completed`, /generate's closing summary, /solve's closing answer); without one,
  one token per data event, as the API sends an event per decoded piece of text.
- Anything else (the plain text of /inference and /predictions): one token per 4 bytes.
"""
from __future__ import annotations

import json

# A JSON answer larger than this is not parsed for its usage (the estimate applies).
MAX_JSON_BYTES = 1 << 20
BYTES_PER_TOKEN = 4


class UsageMeter:
    """Fed each relayed chunk of one answer; tokens() is the count once the answer has ended."""

    def __init__(self, content_type: str):
        content_type = content_type.split(";", 1)[0].strip().lower()
        self.kind = ("sse" if content_type == "text/event-stream"
                     else "json" if content_type == "application/json" else "text")
        self.size = 0
        self.events = 0
        self.reported: int | None = None
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the answer's body."""
        self.size += len(chunk)
        if self.kind == "json":
            if self.size <= MAX_JSON_BYTES:
                self._buffer += chunk
        elif self.kind == "sse":
            self._buffer += chunk
            *events, rest = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
            self._buffer = bytearray(rest[-MAX_JSON_BYTES:])
            for event in events:
                self._event(bytes(event))

    def tokens(self) -> int:
        """The generated tokens of the answer so far (reported, or estimated)."""
        if self.kind == "json" and self.reported is None and self.size <= MAX_JSON_BYTES:
            self.reported = generated_tokens(_parse(bytes(self._buffer)))
            self._buffer = bytearray()
        if self.reported is not None:
            return self.reported
        if self.kind == "sse":
            return self.events
        return -(-self.size // BYTES_PER_TOKEN)

    def _event(self, event: bytes) -> None:
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n")
                          if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        self.events += 1
        if b'"usage"' in data or b'"generated_tokens"' in data:
            count = generated_tokens(_parse(data))
            if count is not None:
                self.reported = count


def _parse(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def generated_tokens(answer) -> int | None:
    """The generated-token count an API answer or event reports, or None if it reports none."""
    if not isinstance(answer, dict):
        return None
    if isinstance(answer.get("response"), dict):  # the Responses API's stream events
        answer = answer["response"]
    usage = answer.get("usage")
    if isinstance(usage, dict):
        for field in ("completion_tokens", "output_tokens"):
            if _count(usage.get(field)):
                return usage[field]
    samples = answer.get("responses")
    if isinstance(samples, list) and samples and all(
            isinstance(s, dict) and _count(s.get("generated_tokens")) for s in samples):
        return sum(s["generated_tokens"] for s in samples)
    return None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
