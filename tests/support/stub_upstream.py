"""Stand-ins for the Inference API in proxy tests: slow chunked streams, echo, canned errors, a
chat stream that ends as asked; RawUpstream, a socket server that says exactly what it is
told and then nothing; and HeadFirstUpstream, one that refuses a large body from its head and
leaves the body unread.

Run it under gunicorn with one gthread worker (stream states live in its memory):
    cd tests/support && gunicorn -k gthread --threads 160 stub_upstream:app
"""
from __future__ import annotations

import base64
import errno
import json
import socket
import sys
import threading
import time
from pathlib import Path

from flask import Flask, Response, jsonify, request

from net import SocketServer, head_received, read_until
from processes import ServerProcess

app = Flask(__name__, static_folder=None)
app.url_map.merge_slashes = False

_lock = threading.Lock()
_streams: dict[str, str] = {}  # stream id -> running | done | cancelled
_concurrency = {"now": 0, "peak": 0}  # streams open at once, and the most ever


def stream_chunk(tag: str, token_id: str, index: int) -> bytes:
    """Chunk `index` of a stream; non-ASCII and non-UTF-8 bytes check byte-exact relaying."""
    return f"{tag}|{token_id}|{index}|héllo ✓|".encode() + b"\xff\x00\n"


def _set_state(stream_id: str, state: str) -> None:
    with _lock:
        _streams[stream_id] = state
        _concurrency["now"] += 1 if state == "running" else -1
        _concurrency["peak"] = max(_concurrency["peak"], _concurrency["now"])


@app.get("/health")
def health():
    return jsonify({"status": "ok"})


@app.route("/stream", methods=["GET", "POST"])
def stream():
    """`n` chunks, `delay` seconds apart; closing the connection early marks it cancelled.

    With `abort=K` the stub drops the connection after K chunks, as a crashing server would;
    `pad=B` adds B bytes to each chunk, to fill socket buffers fast.
    """
    n = int(request.args.get("n", 5))
    pad = b"." * int(request.args.get("pad", 0))
    abort = int(request.args.get("abort", -1))
    delay = float(request.args.get("delay", 0.05))
    tag = request.args.get("tag", "")
    stream_id = request.args.get("id") or request.headers.get("X-Request-ID", "")
    token_id = request.headers.get("X-Token-ID", "")
    request.get_data()
    _set_state(stream_id, "running")

    def chunks():
        state = "cancelled"  # unless the loop below runs to its end
        try:
            for index in range(n):
                if index == abort:
                    # Gunicorn closes the connection without the final chunk on a socket error.
                    raise ConnectionResetError(errno.ECONNRESET, "stub aborts the stream")
                if index:
                    time.sleep(delay)
                yield stream_chunk(tag, token_id, index) + pad
            state = "done"
        finally:
            _set_state(stream_id, state)

    return Response(chunks(), content_type="text/plain; charset=utf-8")


@app.route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@app.route("/echo/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@app.post("/v1/messages")  # Anthropic's path, where the proxy also takes x-api-key
def echo(rest: str = ""):
    """What arrived: method, raw target, headers (repeats kept) and body."""
    return jsonify({
        "method": request.method,
        "target": request.environ.get("RAW_URI", ""),
        "headers": [[name, value] for name, value in request.headers.items()],
        "body_b64": base64.b64encode(request.get_data()).decode(),
    })


@app.get("/set-cookie")
def set_cookie():
    """An answer that sets a cookie, like a session-keeping upstream would."""
    response = jsonify({"cookie": "set"})
    response.set_cookie("session", "for-this-client-only")
    return response


@app.route("/error/<int:status>", methods=["GET", "POST"])
def error(status: int):
    """A canned API error; 503 carries Retry-After like the real server's."""
    response = jsonify({"status_code": status, "message": f"stub error {status}"})
    response.status_code = status
    response.headers["X-Stub-Error"] = "yes"
    if status == 503:
        response.headers["Retry-After"] = "7"
    return response


@app.route("/slow-headers", methods=["GET", "POST"])
def slow_headers():
    """Answer only after `delay` seconds, to trip the proxy's upstream timeout."""
    time.sleep(float(request.args.get("delay", 3)))
    return jsonify({"late": True})


@app.route("/late-body", methods=["GET", "POST"])
def late_body():
    """Headers at once, the body after `delay` seconds, like the API's non-streamed answers."""
    delay = float(request.args.get("delay", 3))
    stream_id = request.args.get("id", "")
    _set_state(stream_id, "running")

    def body():
        state = "cancelled"
        try:
            yield b""  # gunicorn sends the status line and headers with the first write
            time.sleep(delay)
            yield b"late body"
            state = "done"
        finally:
            _set_state(stream_id, state)

    return Response(body(), content_type="text/plain; charset=utf-8")


STUB_MODEL = "stub-model"
# The ending of a stub chat stream, picked by its last message: what a page must put in words.
CHAT_ENDINGS = ("fail", "cut", "busy")


@app.get("/v1/models")
def chat_models():
    """The one model of the stub chat."""
    return jsonify({"object": "list", "data": [{"id": STUB_MODEL, "object": "model"}]})


@app.post("/v1/chat/completions")
def chat_stream():
    """A streamed chat answer, "one two ", ending as its last message says (CHAT_ENDINGS):
    an error event, a dropped connection, a 503 with Retry-After before any answer, or [DONE]."""
    ending = request.get_json()["messages"][-1]["content"].strip()
    if ending == "busy":
        response = jsonify({"error": {"message": "too many prompts wait", "type": "server_error",
                                      "param": None, "code": "overloaded"}})
        response.status_code, response.headers["Retry-After"] = 503, "7"
        return response

    def event(data: str) -> bytes:
        return f"data: {data}\n\n".encode()

    def chunk(delta: dict) -> bytes:
        return event(json.dumps({"object": "chat.completion.chunk", "model": STUB_MODEL,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))

    def events():
        yield chunk({"role": "assistant", "content": ""})
        for word in ("one ", "two "):
            time.sleep(0.05)
            yield chunk({"content": word})
        if ending == "fail":
            yield event(json.dumps({"error": {"message": "the generation failed: stub",
                                              "type": "server_error", "param": None,
                                              "code": "generation_failed"}}))
        elif ending == "cut":
            raise ConnectionResetError(errno.ECONNRESET, "stub drops the stream")
        else:
            yield event("[DONE]")

    return Response(events(), content_type="text/event-stream")


@app.get("/stub/stats")
def stats():
    """The state of one stream (`id`) or of all of them."""
    with _lock:
        if "peak" in request.args:
            return jsonify(dict(_concurrency))
        if "id" in request.args:
            return jsonify({"state": _streams.get(request.args["id"], "unknown")})
        return jsonify(dict(_streams))


@app.errorhandler(404)
def not_found(_err):
    response = jsonify({"status_code": 404, "message": "no such route"})
    response.status_code = 404
    return response


def start_stub(port: int):
    """A ServerProcess running this stub on port (not started yet)."""
    # Run from tests/support/ so that gunicorn does not pick up the API's gunicorn.conf.py.
    support_dir = Path(__file__).resolve().parent
    argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "160", "-w", "1",
            "-b", f"127.0.0.1:{port}", "--no-control-socket", "stub_upstream:app"]
    return ServerProcess(argv, port, cwd=support_dir)


class RawUpstream(SocketServer):
    """A TCP server on 127.0.0.1 that reads each request's headers, sends `reply`, then stays
    silent; it records when the peer closes each connection."""

    def __init__(self, reply: bytes = b""):
        self.reply = reply
        self.requests = 0  # requests whose headers arrived
        self.closed = 0  # connections the peer closed
        self._lock = threading.Condition()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        try:
            if read_until(conn, head_received) is not None:
                with self._lock:
                    self.requests += 1
                    self._lock.notify_all()
                conn.sendall(self.reply)
                while conn.recv(65536):  # whatever else comes, until the peer closes
                    pass
        except OSError:
            pass
        with self._lock:
            self.closed += 1
            self._lock.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        """Whether predicate(self) became true within timeout seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self), timeout)


# Methods HeadFirstUpstream takes for a request line; anything else is not a request.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _request_head(head: bytes) -> tuple[str, str, dict] | None:
    """Method, target and headers (names lower-cased) of a request's head; None if its first
    line is not a request line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] not in _METHODS or not parts[2].startswith("HTTP/1."):
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _answer(status: str, payload: dict, close: bool = False) -> bytes:
    """An HTTP/1.1 answer with a JSON body, kept alive unless close."""
    body = json.dumps(payload).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode() + body


class HeadFirstUpstream(SocketServer):
    """An API that refuses a body over `limit` from the head alone, as a server checking
    Content-Length before reading would: 413, the connection kept alive, the body left in the
    stream, where it is taken for the start of the next request.

    Other requests are read whole and answered 200 with their method, target, X-Request-ID and
    body size. What does not start with a request line gets 400 and the connection closed, as
    gunicorn answers it; `garbled` counts those.

    A refused request carrying `X-Stub-Split` gets the head and half the body of its 413, and
    the rest only once the test calls release_split(): the proxy has the status and headers
    before the answer is complete.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.refused = 0  # 413s sent
        self.served = 0  # 200s sent
        self.garbled = 0  # 400s sent for bytes that were no request
        self._split = threading.Event()
        self._lock = threading.Lock()
        super().__init__()

    def release_split(self) -> None:
        """Send the rest of the split 413s."""
        self._split.set()

    def close(self) -> None:
        self.release_split()  # no thread left waiting for a test that has ended
        super().close()

    def serve(self, conn: socket.socket) -> None:
        pending = b""
        try:
            while (received := read_until(conn, head_received, pending)) is not None:
                head, _, pending = received.partition(b"\r\n\r\n")
                pending = self._answer_one(conn, _request_head(head), pending)
                if pending is None:
                    break
        except OSError:
            pass
        finally:
            conn.close()

    def _answer_one(self, conn: socket.socket, request, pending: bytes) -> bytes | None:
        """Answer one request whose head was read; what is left of the stream after it, or
        None once the connection is to be closed."""
        if request is None:
            self._count("garbled")
            conn.sendall(_answer("400 Bad Request", {"message": "no request line"}, close=True))
            return None
        method, target, headers = request
        length = int(headers.get("content-length") or 0)
        # The bytes of the body come off the socket before the answer only so that the sender
        # has written them all by then, whatever the timing; they stay in `pending`.
        pending = read_until(conn, lambda got: len(got) >= length, pending)
        if pending is None:
            return None
        if length > self.limit:
            self._refuse(conn, headers)
            return pending  # the body: read next as if it began a request
        self._count("served")
        conn.sendall(_answer("200 OK", {"method": method, "target": target,
                                        "request_id": headers.get("x-request-id", ""),
                                        "body_bytes": length}))
        return pending[length:]

    def _refuse(self, conn: socket.socket, headers: dict) -> None:
        self._count("refused")
        answer = _answer("413 Payload Too Large", {"message": f"body over {self.limit} bytes"})
        if "x-stub-split" in headers:
            conn.sendall(answer[:-10])
            self._split.wait(60)
            answer = answer[-10:]
        conn.sendall(answer)

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)
