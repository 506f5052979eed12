"""Hostile or broken peers at the proxy's edge: malformed requests, odd paths, slow clients,
forged forwarding headers, silent upstreams. Every answer is the proxy's JSON error shape."""
from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import requests

from helpers import bearer, make_token, sample, scrape, seen_headers, start_proxy, wait_for
from net import answer_complete, connect, exchange, head_received, parse_answer, read_until
from stub_upstream import RawUpstream

pytestmark = pytest.mark.processes

MAX_BODY = 64 * 1024
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def proxy(upstream):
    """Short client deadlines and a small body limit; a long keep-alive so it never interferes."""
    with start_proxy(upstream.url, PROXY_MAX_BODY_BYTES=str(MAX_BODY),
                     PROXY_HEADER_TIMEOUT=str(HEADER_TIMEOUT_S),
                     PROXY_BODY_TIMEOUT=str(BODY_TIMEOUT_S), PROXY_KEEPALIVE_TIMEOUT="60",
                     PROXY_UPSTREAM_TIMEOUT="30") as server:
        yield server


def json_error(raw: bytes, status: int, openai: bool = False) -> str:
    """The message of a JSON error answer with this status, in the native or OpenAI's shape."""
    got, headers, body = parse_answer(raw)
    assert got == status, raw[:300]
    assert headers["content-type"].startswith("application/json"), headers
    payload = json.loads(body)
    if openai:
        assert payload["error"]["type"] == "invalid_request_error", payload
        return payload["error"]["message"]
    assert payload["status_code"] == status
    return payload["message"]


def auth_line() -> bytes:
    return f"Authorization: Bearer {make_token()}\r\n".encode()


def close_header() -> bytes:
    return b"Connection: close\r\n"


# --- request bodies ------------------------------------------------------------------------

@pytest.mark.parametrize("size_line", [b"zz", b"-1", b"0x10"])
@pytest.mark.parametrize("split", [False, True], ids=["one_write", "body_later"])
def test_bad_chunk_size_is_400_json(proxy, size_line, split):
    head = (b"POST /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line() + close_header()
            + b"Transfer-Encoding: chunked\r\n\r\n")
    body = size_line + b"\r\nabc\r\n0\r\n\r\n"
    parts = (head, body) if split else (head + body,)
    raw = exchange(proxy.port, *parts, pause=0.3)
    assert "chunk" in json_error(raw, 400).lower()


def test_chunked_body_over_the_limit_is_413(proxy):
    chunk = b"a" * 16384
    head = (b"POST /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line() + close_header()
            + b"Transfer-Encoding: chunked\r\n\r\n")
    body = (b"4000\r\n" + chunk + b"\r\n") * (MAX_BODY // len(chunk) + 2) + b"0\r\n\r\n"
    message = json_error(exchange(proxy.port, head, body), 413)
    assert str(MAX_BODY) in message


def test_chunked_body_within_the_limit_is_forwarded_whole(proxy):
    head = (b"POST /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line() + close_header()
            + b"Transfer-Encoding: chunked\r\n\r\n")
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    status, _, answer = parse_answer(exchange(proxy.port, head, body, pause=0.2))
    assert status == 200
    assert json.loads(answer)["body_b64"] == "aGVsbG8gd29ybGQ="


def test_content_length_over_the_limit_is_413_without_reading_it(proxy):
    head = (b"POST /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line()
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
    assert str(MAX_BODY) in json_error(exchange(proxy.port, head, timeout=20), 413)


def test_body_that_stops_arriving_is_408(proxy):
    before = scrape(proxy)
    head = (b"POST /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line()
            + b"Content-Length: 100\r\n\r\n" + b"x" * 10)
    message = json_error(exchange(proxy.port, head, timeout=30), 408)
    assert f"{BODY_TIMEOUT_S} s" in message
    after = scrape(proxy)
    assert sample(after, "proxy_client_timeouts_total", phase="body") \
        - sample(before, "proxy_client_timeouts_total", phase="body") == 1


# --- request line and headers ---------------------------------------------------------------

def test_huge_header_is_431_json(proxy):
    raw = exchange(proxy.port, b"GET /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line()
                   + b"X-Big: " + b"a" * 65536 + b"\r\n\r\n")
    assert "too large" in json_error(raw, 431)


def test_too_many_headers_is_431_json(proxy):
    many = b"".join(f"X-H{i}: v\r\n".encode() for i in range(300))
    raw = exchange(proxy.port, b"GET /echo HTTP/1.1\r\nHost: proxy\r\n" + many + b"\r\n")
    json_error(raw, 431)


def test_huge_request_line_is_414_json(proxy):
    raw = exchange(proxy.port, b"GET /echo?" + b"q" * 20000 + b" HTTP/1.1\r\nHost: proxy\r\n\r\n")
    json_error(raw, 414)


@pytest.mark.parametrize("request_bytes", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the plain port
    b"GET /echo HTTP/9.9\r\nHost: proxy\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
], ids=["tls", "version", "header_name"])
def test_malformed_requests_are_400_json(proxy, request_bytes):
    json_error(exchange(proxy.port, request_bytes), 400)


def test_client_that_dribbles_its_headers_is_dropped(proxy):
    before = scrape(proxy)
    started = time.monotonic()
    with connect(proxy.port, timeout=30) as sock:
        closed = False
        # One header line a second: each byte is progress, but the headers never end.
        for index in range(30):
            try:
                line = f"X-Slow-{index}: y\r\n" if index else "GET /echo HTTP/1.1\r\n"
                sock.sendall(line.encode())
            except OSError:
                closed = True
                break
            sock.settimeout(1.0)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except ConnectionResetError:
                closed = True
                break
    assert closed, "the proxy kept a connection whose headers never ended"
    assert time.monotonic() - started < 25  # far less than the 30 lines it would take
    after = scrape(proxy)
    assert sample(after, "proxy_client_timeouts_total", phase="headers") \
        - sample(before, "proxy_client_timeouts_total", phase="headers") >= 1


def test_kept_alive_connection_serves_requests_slower_than_the_header_deadline(proxy):
    # The header deadline counts from a request's first byte, not from the connection's start.
    with connect(proxy.port, timeout=20) as sock:
        for index in range(3):
            if index:
                time.sleep(HEADER_TIMEOUT_S + 0.5)  # idle, but within the keep-alive timeout
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: proxy\r\n" + auth_line() + b"\r\n")
            received = read_until(sock, answer_complete)
            assert received is not None, "the proxy closed a kept-alive connection"
            assert parse_answer(received)[0] == 200


def test_slow_but_complete_headers_within_the_deadline_are_served(upstream):
    # The keep-alive timeout is for idle connections: one receiving a request, however
    # slowly, has the whole header deadline.
    with start_proxy(upstream.url, PROXY_KEEPALIVE_TIMEOUT="1",
                     PROXY_HEADER_TIMEOUT="60") as proxy:
        lines = [b"GET /echo HTTP/1.1\r\n", b"Host: proxy\r\n", auth_line(), close_header(),
                 b"X-Slow: 1\r\n", b"X-Slow-Too: 2\r\n", b"\r\n"]
        status, _, _ = parse_answer(exchange(proxy.port, *lines, pause=0.5))
        assert status == 200


# --- paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/v1/x/../../metrics", "/echo/../metrics", "/echo/./x", "/echo/..",
    "/v1/x/%2e%2e/%2E%2e/metrics", "/echo/.%2e/x", "/echo/a%2Fb", "/echo/a%2fb", "/echo/a%5Cb",
    "//metrics", "http://upstream/metrics",
    "*",
])
def test_dot_segments_and_foreign_targets_are_refused_before_auth(proxy, target):
    raw = exchange(proxy.port, f"GET {target} HTTP/1.1\r\nHost: proxy\r\n".encode()
                   + auth_line() + close_header() + b"\r\n")
    json_error(raw, 400, openai=target.startswith("/v1/"))


def test_api_metrics_are_not_reachable_through_the_proxy(proxy):
    # No method or token reaches the API's /metrics; the proxy's own is on its metrics port.
    for method in ("GET", "POST", "PUT", "DELETE"):
        response = requests.request(method, proxy.url + "/metrics", headers=bearer(make_token()),
                                    timeout=5)
        assert response.status_code == 404
        assert response.json()["status_code"] == 404
        assert "inference_" not in response.text


def test_refused_target_is_logged_without_the_raw_path(proxy):
    request_id = f"bad-target-{uuid.uuid4().hex[:8]}"
    exchange(proxy.port, b"GET /v1/x/../../metrics HTTP/1.1\r\nHost: proxy\r\n" + close_header()
             + f"X-Request-ID: {request_id}\r\n\r\n".encode())
    assert wait_for(lambda: any(f"request_id={request_id} " in line
                                for line in proxy.output().splitlines()), timeout=5)
    [line] = [line for line in proxy.output().splitlines() if f"request_id={request_id} " in line]
    assert "path=- " in line and "outcome=bad_target" in line and ".." not in line


# --- forwarding headers ---------------------------------------------------------------------

def test_client_forwarding_claims_are_replaced_by_the_peer_address(proxy):
    response = requests.get(proxy.url + "/echo", timeout=5, headers={
        **bearer(make_token()), "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6",
        "X-Real-IP": "6.6.6.6", "X-Forwarded-Host": "evil", "X-Forwarded-Proto": "https"})
    echoed = response.json()["headers"]
    names = [name.lower() for name, _ in echoed]
    headers = seen_headers(response.json())
    assert names.count("x-forwarded-for") == 1 and headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert "forwarded" not in headers and "x-real-ip" not in headers
    assert "x-forwarded-host" not in headers
    assert "6.6.6.6" not in response.text


# --- the upstream's answer ------------------------------------------------------------------

def test_response_headers_are_sent_before_the_body_exists(proxy, upstream):
    stream_id = uuid.uuid4().hex
    with connect(proxy.port, timeout=30) as sock:
        sock.sendall(f"GET /late-body?delay=3&id={stream_id} HTTP/1.1\r\nHost: proxy\r\n"
                     f"Authorization: Bearer {make_token()}\r\n\r\n".encode())
        received = read_until(sock, head_received)
        assert received is not None, "the proxy closed the connection"
        # The status line is here while the upstream is still working on the body.
        state = requests.get(upstream.url + "/stub/stats", params={"id": stream_id}, timeout=5)
        assert state.json()["state"] == "running"
        assert received.startswith(b"HTTP/1.1 200 ")
        received = read_until(sock, lambda got: got.endswith(b"0\r\n\r\n"), received)
        assert received is not None, "the proxy closed the connection before the end"
    assert b"late body" in received


def test_upstream_silent_before_headers_is_504_and_its_connection_closed():
    with RawUpstream() as silent, start_proxy(silent.url, health_path="/metrics",
                                              PROXY_UPSTREAM_TIMEOUT="1") as proxy:
        response = requests.get(proxy.url + "/inference/m", headers=bearer(make_token()),
                                timeout=30)
        assert response.status_code == 504
        assert response.json()["status_code"] == 504
        # The API learns of the give-up from the closed connection and cancels the work.
        assert silent.wait(lambda s: s.closed >= 1, timeout=10)


def test_upstream_silent_mid_stream_cuts_the_stream_and_closes_upstream():
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nfirst\r\n")
    with RawUpstream(head) as stalling, start_proxy(stalling.url, health_path="/metrics",
                                                    PROXY_UPSTREAM_TIMEOUT="1") as proxy:
        before = scrape(proxy)
        with requests.get(proxy.url + "/inference/m", headers=bearer(make_token()), stream=True,
                          timeout=30) as response:
            assert response.status_code == 200
            received = b""
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                for chunk in response.iter_content(chunk_size=None):
                    received += chunk
        assert received == b"first"
        assert stalling.wait(lambda s: s.closed >= 1, timeout=10)
        after = scrape(proxy)
        assert sample(after, "proxy_upstream_errors_total", kind="timeout") \
            - sample(before, "proxy_upstream_errors_total", kind="timeout") == 1


def test_client_that_stops_reading_is_cut_and_the_upstream_stream_cancelled(upstream):
    stream_id = uuid.uuid4().hex
    with start_proxy(upstream.url, PROXY_SEND_TIMEOUT="2") as proxy:
        before = scrape(proxy)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", proxy.port))
            sock.sendall(f"GET /stream?n=20000&delay=0&pad=4096&id={stream_id} HTTP/1.1\r\n"
                         f"Host: proxy\r\nAuthorization: Bearer {make_token()}\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")
            # Read nothing more: once every buffer on the way is full, the stream stalls.

            def state():
                return requests.get(upstream.url + "/stub/stats", params={"id": stream_id},
                                    timeout=5).json()["state"]
            assert wait_for(lambda: state() == "cancelled", timeout=60), state()
        after = scrape(proxy)
        assert sample(after, "proxy_client_timeouts_total", phase="send") \
            - sample(before, "proxy_client_timeouts_total", phase="send") == 1
        assert "outcome=client_stalled" in proxy.output()


def test_client_leaving_a_non_streamed_request_closes_upstream_at_once():
    # The upstream never answers and the idle timeout is long: only the client's leaving can
    # end this exchange before it.
    with RawUpstream() as silent, start_proxy(silent.url, health_path="/metrics",
                                              PROXY_UPSTREAM_TIMEOUT="300") as proxy:
        with connect(proxy.port, timeout=10) as sock:
            sock.sendall(b"POST /generate HTTP/1.1\r\nHost: proxy\r\n" + auth_line()
                         + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            assert silent.wait(lambda s: s.requests >= 1, timeout=10)
        assert silent.wait(lambda s: s.closed >= 1, timeout=15)
        assert wait_for(lambda: "outcome=client_gone" in proxy.output(), timeout=5)
