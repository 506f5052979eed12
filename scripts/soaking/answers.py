"""Send one Call and say how it ended: a complete answer (with its texts), a documented error,
a visible cut, the client leaving on purpose, nothing listening, or a failure."""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from .calls import Call

COMPLETE, ERROR, CUT, LEFT, REFUSED, FAILED = "complete", "error", "cut", "left", "refused", "FAILED"
TIMEOUT = (5, 300)  # connect, and the longest silence between two reads


@dataclass
class Result:
    call: Call
    started: float
    ended: float = 0.0
    outcome: str = FAILED
    detail: str = ""
    status: int | None = None
    texts: list[str] = field(default_factory=list)  # per choice, for complete answers
    retry_after: float | None = None


def send(call: Call, url: str, headers: dict) -> Result:
    result = Result(call, time.monotonic())
    try:
        if call.behaviour == "leave_early":
            _leave_early(call, url, headers)
            result.outcome = LEFT
        else:
            _exchange(call, url, headers, result)
    except requests.exceptions.ConnectionError as exc:
        # Before any status (nothing listened, or the connection dropped) or during the body.
        result.outcome = CUT if result.status is not None else REFUSED
        result.detail = type(exc).__name__
    except requests.exceptions.ChunkedEncodingError as exc:
        result.outcome, result.detail = CUT, type(exc).__name__
    except requests.exceptions.Timeout:
        result.outcome, result.detail = FAILED, "no byte for 300 s: a hung request"
    except OSError as exc:  # the raw socket of a client leaving early: nothing listened
        result.outcome, result.detail = REFUSED, type(exc).__name__
    result.ended = time.monotonic()
    return result


def _post(call: Call, url: str, headers: dict) -> requests.Response:
    # The /inference route always streams and has no stream field.
    asked = call.stream and not call.path.startswith("/inference/")
    body = call.body if isinstance(call.body, bytes) else json.dumps(
        {**call.body, **({"stream": True} if asked else {})}).encode()
    return requests.post(url + call.path, data=body, timeout=TIMEOUT, stream=True,
                         headers={**headers, "Content-Type": "application/json"})


def _exchange(call: Call, url: str, headers: dict, result: Result) -> None:
    with _post(call, url, headers) as response:
        result.status = response.status_code
        if response.status_code != 200:
            _refusal(call, response, result)
            return
        if call.expect == "client_error":
            result.detail = "a 200 for a request that should be refused"
            return
        if call.behaviour == "leave_mid":
            for index, _ in enumerate(response.iter_content(chunk_size=None)):
                if index >= 2:
                    break
            result.outcome = LEFT
            return
        raw = b""
        for piece in response.iter_content(chunk_size=64 if call.behaviour == "slow" else None):
            raw += piece
            if call.behaviour == "slow":
                time.sleep(0.02)
    _read_answer(call, raw.decode(), result)


def _refusal(call: Call, response: requests.Response, result: Result) -> None:
    """A non-200 is documented when it is a 4xx the call asked for, or a 503 with Retry-After."""
    status, text = response.status_code, response.text
    result.detail = f"{status} {text[:160]}"
    if status == 503 and response.headers.get("Retry-After"):
        result.outcome, result.retry_after = ERROR, float(response.headers["Retry-After"])
    elif 400 <= status < 500 and call.expect == "client_error":
        result.outcome = ERROR if _json(text) is not None else FAILED
    # Anything else (a 4xx for a good request, a 500, 502, 504) is a failure.


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _read_answer(call: Call, text: str, result: Result) -> None:
    if call.path.startswith("/inference/"):
        result.outcome, result.texts = COMPLETE, [text]
    elif call.stream:
        _read_events(call, text, result)
    else:
        answer = _json(text)
        if answer is None:
            result.detail = f"a 200 that is not JSON: {text[:120]!r}"
            return
        result.outcome, result.texts = COMPLETE, whole_texts(call, answer)


def whole_texts(call: Call, answer: dict) -> list[str]:
    """Each choice's text of an answer sent whole; tool calls count as text."""
    if call.path == "/generate":
        return [r["text"] for r in answer["responses"]]
    choices = sorted(answer["choices"], key=lambda c: c["index"])
    if call.path == "/v1/completions":
        return [c["text"] for c in choices]
    return [json.dumps([c["message"].get("content"), c["message"].get("tool_calls")])
            if c["message"].get("tool_calls") else c["message"]["content"] or "" for c in choices]


def _read_events(call: Call, text: str, result: Result) -> None:
    """A stream is complete only with its terminator ([DONE], or /generate's summary); one that
    ends with an error event is a documented error; one that just stops is a silent cut."""
    events = [_json(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
              for line in text.split("\n") if line.startswith("data: ")]
    last = events[-1] if events else None
    if isinstance(last, dict) and ("error" in last or "status_code" in last):
        error = last.get("error") or last
        result.outcome = ERROR if last.get("retry_after") or error.get("code") else FAILED
        result.detail = f"error event: {json.dumps(last)[:160]}"
        return
    texts: dict[int, str] = {}
    if call.path == "/generate":
        if not (isinstance(last, dict) and "responses" in last):
            result.detail = "the stream ended without its summary: silently truncated"
            return
        for event in events[:-1]:
            texts[event["index"]] = texts.get(event["index"], "") + event["text"]
        if [texts.get(i, "") for i in range(len(last["responses"]))] != whole_texts(call, last):
            result.detail = "the streamed text differs from the stream's own summary"
            return
    else:
        if last != "[DONE]":
            result.detail = "the stream ended without [DONE]: silently truncated"
            return
        for event in events[:-1]:
            for choice in event.get("choices", []):
                piece = choice.get("text") if "text" in choice else choice["delta"].get("content")
                texts[choice["index"]] = texts.get(choice["index"], "") + (piece or "")
    result.outcome, result.texts = COMPLETE, [texts[i] for i in sorted(texts)]


def _leave_early(call: Call, url: str, headers: dict) -> None:
    """Send the whole request, then close before the answer's first byte."""
    parts = urlsplit(url)
    body = call.body if isinstance(call.body, bytes) else json.dumps(call.body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(f"POST {call.path} HTTP/1.1\r\nHost: soak\r\n{head}Content-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
