"""A request's life at the edges: clients that leave, backends that die, servers that drain."""
from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from helpers import MODEL, api_server, backend_process, health, post, wait_for
from inference_api.config import Config
from inference_api.mock.text import mock_answer
from net import connect

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def slow_mock():
    """A mock server slow enough (20 ms a token) that 2,000 tokens take 40 s."""
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "20"}) as server:
        yield server


def send_and_leave(server, path: str, body: dict, wait_s: float) -> bytes:
    """POST body over a raw socket, read for wait_s seconds, then close the connection."""
    payload = json.dumps(body).encode()
    with connect(server.port, timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        sock.settimeout(wait_s)
        received = b""
        deadline = time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                received += sock.recv(65536)
        except socket.timeout:
            pass
    return received


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"model": MODEL, "prompt": "leave", "max_tokens": 2000}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "leave"}],
                              "max_tokens": 2000}),
    ("/generate", {"text": "leave", "max_tokens": 2000, "n": 2}),
    (f"/inference/{MODEL}", {"text": "leave", "max_tokens": 2000}),
    ("/v1/responses", {"model": MODEL, "input": "leave", "max_output_tokens": 2000}),
    ("/v1/responses", {"model": MODEL, "input": "leave", "max_output_tokens": 2000,
                       "stream": True}),
    ("/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "leave"}],
                      "max_tokens": 2000}),
    ("/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "leave"}],
                      "max_tokens": 2000, "stream": True}),
])
def test_disconnect_frees_rows_while_tokens_flow(slow_mock, path, body):
    """A client that leaves mid-generation frees its rows although its tokens keep coming."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: send_and_leave(slow_mock, path, body, 1.0), range(4)))
    # The generations would run 40 s; freed rows show well before.
    assert wait_for(lambda: health(slow_mock)["sessions"] == 0
                    and health(slow_mock)["busy_rows"] == 0, timeout=20)


def test_sigterm_drain_refuses_new_work_at_once_and_finishes_streams():
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "20"}).start(timeout=60)
    try:
        backend = backend_process(server)
        response = post(server, {"text": "finish me", "max_tokens": 250}, stream=True)
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        server.signal(signal.SIGTERM)
        assert wait_for(lambda: "draining" in server.output(), timeout=10)
        # Answered, not left in the listen backlog: the stream above still runs for seconds.
        checked = requests.get(server.url + "/health", timeout=10)
        assert checked.status_code == 503 and "shutting down" in checked.json()["message"]
        refused = post(server, {"text": "too late", "max_tokens": 3})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        body = first + b"".join(chunks)
        assert body.decode() == mock_answer("finish me", 250)
        assert server.proc.wait(30) == 0
        assert wait_for(lambda: not backend.is_running() or backend.status() == "zombie", 10)
    finally:
        server.stop()


def test_drain_timeout_cuts_what_still_runs_and_exits():
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "20",
                         "DRAIN_TIMEOUT_S": "1"}).start(timeout=60)
    try:
        response = post(server, {"text": "too long", "max_tokens": 2000}, stream=True)
        chunks = response.iter_content(chunk_size=None)
        next(chunks)
        server.signal(signal.SIGTERM)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(chunks)
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_backend_exits_when_the_worker_is_killed():
    """A SIGKILLed worker runs no clean-up; its backend must still not outlive it."""
    with api_server({"MOCK_MODEL": "1"}) as server:
        backend = backend_process(server)
        worker = psutil.Process(backend.ppid())
        assert worker.pid != server.proc.pid
        worker.send_signal(signal.SIGKILL)
        assert wait_for(lambda: not backend.is_running() or backend.status() == "zombie", 15)


def test_api_listens_on_loopback_by_default():
    assert Config().service_host == "127.0.0.1"
    with api_server({"MOCK_MODEL": "1", "SERVICE_HOST": ""}) as server:
        listening = [c.laddr for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)


def test_header_too_large_is_a_json_error(mock_server):
    response = requests.get(mock_server.url + "/health", headers={"X-Big": "a" * 65536},
                            timeout=10)
    assert response.status_code == 431
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status_code"] == 431
