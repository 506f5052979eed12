"""The API's gunicorn worker: gthread that drains on SIGTERM and answers its own errors in JSON."""
from __future__ import annotations

import ctypes
import json
import os
import threading
import time

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

DRAIN_POLL_SECONDS = 0.1
# gunicorn's request in this thread: gunicorn drops a Connection header the app sets, so an
# answer that must end its connection says so on the request (close_connection).
_serving = threading.local()
# glibc gives each thread that allocates a malloc arena of its own, up to eight per core, and
# keeps what is freed in it: with a thread per stream the worker's resident memory crept up by
# about 70 MiB over six minutes of traffic on the default model; with two arenas it stayed flat
# but for one step of 25 MiB (measured with scripts/soak.py). MALLOC_ARENA_MAX, when set, wins.
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for the threads to come; no-op on other C libraries."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass


def close_connection() -> None:
    """End this request's connection after its answer ("Connection: close"); no-op elsewhere
    (Flask's test client, other servers)."""
    req = getattr(_serving, "req", None)
    if req is not None:
        req.must_close = True


class ApiWorker(ThreadWorker):
    """gthread, except that SIGTERM keeps the worker answering until its streams have ended.

    gthread stops accepting at once on SIGTERM, so new requests and /health would wait in
    the listen backlog until the worker exits and then fail. While draining, this worker
    still accepts: /health answers 503 and new generations 503 with Retry-After (the
    EngineClient refuses them), and the running streams finish. It stops when none is left or
    at DRAIN_TIMEOUT_S, when the backend is stopped and what still runs ends with an error.
    """

    def init_process(self):
        limit_malloc_arenas()  # before the request threads exist
        super().init_process()

    def handle_request(self, req, conn):
        _serving.req = req
        try:
            return super().handle_request(req, conn)
        finally:
            _serving.req = None

    def handle_exit(self, sig, frame):
        app = getattr(self, "wsgi", None)
        if app is None or "models" not in getattr(app, "extensions", {}):
            return super().handle_exit(sig, frame)  # still booting: nothing runs yet
        models = app.extensions["models"]
        if models.draining:
            return
        models.start_draining()
        self.log.info("draining: refusing new requests while %d run", models.open_sessions)
        threading.Thread(target=self._drain, args=(models, sig, frame), name="drain",
                         daemon=True).start()

    def _drain(self, models, sig, frame) -> None:
        deadline = time.monotonic() + models.config.drain_timeout_s
        while models.open_sessions and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_SECONDS)
        if models.open_sessions:
            self.log.warning("drain timeout: ending %d running requests", models.open_sessions)
        models.stop()  # ends what still runs with an error, so its connections close
        super().handle_exit(sig, frame)


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it could not parse, in the API's JSON error shape."""
    body = json.dumps({"status_code": status_int, "message": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn writes an HTML page for requests it refuses before the app sees them (a 64 KB
# header: 431; a bad request line: 400); every other error of this API is JSON.
util.write_error = write_json_error
