"""The JWT proxy as a client sees it: real gunicorn processes for the proxy and a stub upstream."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import (SECRET, bearer, claims_of, make_token, proxy_argv, sample, scrape,
                     seen_headers, start_proxy, wait_for)
from net import connect, free_port, read_until
from processes import REPO
from proxy.config import ProxyConfig
from stub_upstream import stream_chunk

pytestmark = pytest.mark.processes  # servers of its own: a stub upstream and proxies

UPSTREAM_TIMEOUT_S = 2.0
TOKEN_LIMIT = 2


@pytest.fixture(scope="module")
def proxy(upstream):
    with start_proxy(upstream.url, PROXY_UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT_S),
                     PROXY_MAX_STREAMS_PER_TOKEN=str(TOKEN_LIMIT)) as server:
        yield server


def unsigned_token(**claims) -> str:
    """An `alg: none` token, which PyJWT will not make."""
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'team_id': 't', 'token_id': 'k', **claims})}."


# --- authentication ---------------------------------------------------------------------------

NOW = int(time.time())
REFUSALS = {
    "missing header": (lambda: {}, "missing_header", "missing Authorization"),
    "basic scheme": (lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, "bad_scheme", "Bearer"),
    "token scheme": (lambda: bearer(make_token(), scheme="Token"), "bad_scheme", "Bearer"),
    "not a jwt": (lambda: bearer("not-a-jwt"), "malformed", "well-formed"),
    "bad signature": (lambda: bearer(make_token(secret="another-secret-of-enough-length-0123")),
                      "bad_signature", "signature"),
    "alg none": (lambda: bearer(unsigned_token()), "bad_algorithm", "HS256"),
    "alg HS512": (lambda: bearer(make_token(algorithm="HS512")), "bad_algorithm", "HS256"),
    "expired": (lambda: bearer(make_token(exp=int(time.time()) - 120)), "expired", "expired"),
    "nbf in future": (lambda: bearer(make_token(nbf=int(time.time()) + 600)), "not_yet_valid",
                      "not yet valid"),
    "missing team_id": (lambda: bearer(make_token(team_id=None)), "missing_claim", "team_id"),
    "missing token_id": (lambda: bearer(make_token(token_id=None)), "missing_claim", "token_id"),
    "team_id with spaces": (lambda: bearer(make_token(team_id="a b")), "bad_claim", "team_id"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_with_401_json_and_reason(proxy, case):
    make_headers, reason, says = REFUSALS[case]
    headers = make_headers()
    before = scrape(proxy)
    response = requests.post(proxy.url + "/echo", headers=headers, data=b"{}", timeout=5)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status_code"] == 401 and says in body["message"]
    credential = headers.get("Authorization", "").partition(" ")[2]
    if credential:
        assert credential not in response.text
        assert all(credential not in value for value in response.headers.values())
    after = scrape(proxy)
    assert sample(after, "proxy_auth_failures_total", reason=reason) \
        - sample(before, "proxy_auth_failures_total", reason=reason) == 1


def test_expiry_within_leeway_is_accepted(proxy):
    token = make_token(exp=int(time.time()) - 2)
    assert requests.get(proxy.url + "/echo", headers=bearer(token), timeout=5).status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(proxy, scheme):
    response = requests.get(proxy.url + "/echo", headers=bearer(make_token(), scheme), timeout=5)
    assert response.status_code == 200


def test_health_needs_no_token(proxy, upstream):
    response = requests.get(proxy.url + "/health", timeout=5)
    assert response.status_code == 200
    assert response.content == requests.get(upstream.url + "/health", timeout=5).content


def test_metrics_are_served_on_the_metrics_port_without_a_token(proxy):
    response = requests.get(proxy.metrics_url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "proxy_requests_total" in response.text
    assert "proxy_rate_limited_total" in response.text
    assert requests.head(proxy.metrics_url + "/metrics", timeout=5).status_code == 200


def test_the_public_port_does_not_serve_metrics_even_with_a_token(proxy):
    for headers in ({}, bearer(make_token())):
        response = requests.get(proxy.url + "/metrics", headers=headers, timeout=5)
        assert response.status_code == 404
        assert response.json() == {"status_code": 404, "message": "no such path: metrics are "
                                   "served on the operators' port only"}
        assert "proxy_requests_total" not in response.text
    # /health stays open on the public port for load balancers.
    assert requests.get(proxy.url + "/health", timeout=5).status_code == 200


def test_the_metrics_port_serves_nothing_else(proxy):
    for path in ("/health", "/", "/metrics/x", "/v1/models"):
        response = requests.get(proxy.metrics_url + path, headers=bearer(make_token()),
                                timeout=5)
        assert response.status_code == 404 and "proxy_requests_total" not in response.text
    response = requests.post(proxy.metrics_url + "/metrics", timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"


def test_the_metrics_port_listens_on_loopback_by_default():
    config = ProxyConfig.from_env({"JWT_SECRET": SECRET})
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 1224)


# --- forwarding -------------------------------------------------------------------------------

def test_upstream_gets_identity_headers_not_the_token(proxy):
    token = make_token(team_id="team-x", token_id="tok-x")
    body = b"\x00binary \xff body"
    response = requests.post(
        proxy.url + "/echo/a%20b//c;p=1?x=1&y=%20z&x=2&q=/../x", data=body, timeout=5,
        headers={**bearer(token), "X-Request-ID": "req-123", "X-Custom": "kept",
                 "X-Team-ID": "spoofed", "X-Token-ID": "spoofed",
                 "Connection": "keep-alive, X-Hop", "X-Hop": "dropped"})
    assert response.status_code == 200
    echo = response.json()
    headers = seen_headers(echo)
    assert echo["method"] == "POST"
    assert echo["target"] == "/echo/a%20b//c;p=1?x=1&y=%20z&x=2&q=/../x"
    assert base64.b64decode(echo["body_b64"]) == body
    assert headers["x-team-id"] == "team-x" and headers["x-token-id"] == "tok-x"
    assert headers["x-request-id"] == "req-123"
    assert headers["x-custom"] == "kept"
    assert "authorization" not in headers and "x-hop" not in headers
    assert token not in response.text
    assert response.headers["X-Request-ID"] == "req-123"


def test_upstream_cookies_go_back_to_their_client_only(proxy):
    first = requests.get(proxy.url + "/set-cookie", headers=bearer(make_token()), timeout=5)
    assert "session=for-this-client-only" in first.headers["Set-Cookie"]
    echo = requests.get(proxy.url + "/echo", headers=bearer(make_token()), timeout=5).json()
    assert "cookie" not in seen_headers(echo)


def test_request_id_is_made_when_missing(proxy):
    response = requests.get(proxy.url + "/echo", headers=bearer(make_token()), timeout=5)
    sent = seen_headers(response.json())["x-request-id"]
    assert uuid.UUID(sent)
    assert response.headers["X-Request-ID"] == sent


def test_stream_equals_direct_stream_byte_for_byte(proxy, upstream):
    token = make_token()
    target = "/stream?n=8&delay=0.02&tag=same"
    direct = requests.post(upstream.url + target, data=b"prompt", timeout=10,
                           headers={"X-Token-ID": claims_of(token)["token_id"]})
    proxied = requests.post(proxy.url + target, data=b"prompt", headers=bearer(token), timeout=10)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content
    assert proxied.content.count(b"\xff\x00\n") == 8
    assert proxied.headers["Content-Type"] == direct.headers["Content-Type"]
    assert proxied.headers.get("Transfer-Encoding") == "chunked"


def test_first_chunk_is_not_held_back(proxy, upstream):
    stream_id = uuid.uuid4().hex
    target = f"/stream?n=4&delay=0.3&id={stream_id}"
    with requests.post(proxy.url + target, headers=bearer(make_token()), stream=True,
                       timeout=10) as response:
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        # The upstream is still producing when the first chunk has reached the client.
        state = requests.get(upstream.url + f"/stub/stats?id={stream_id}", timeout=5).json()
        rest = b"".join(chunks)
    assert first.startswith(b"|")
    assert state["state"] == "running"
    assert rest


@pytest.mark.parametrize("status", [400, 404, 413, 503])
def test_upstream_errors_pass_through_unchanged(proxy, upstream, status):
    direct = requests.post(upstream.url + f"/error/{status}", timeout=5)
    proxied = requests.post(proxy.url + f"/error/{status}", headers=bearer(make_token()),
                            timeout=5)
    assert proxied.status_code == direct.status_code == status
    assert proxied.content == direct.content
    for name in ("Content-Type", "Content-Length", "X-Stub-Error", "Retry-After"):
        assert proxied.headers.get(name) == direct.headers.get(name)
    if status == 503:
        assert proxied.headers["Retry-After"] == "7"


def test_unknown_upstream_path_is_upstreams_404(proxy):
    response = requests.get(proxy.url + "/no/such/route", headers=bearer(make_token()), timeout=5)
    assert response.status_code == 404
    assert response.json() == {"status_code": 404, "message": "no such route"}


def test_client_disconnect_cancels_upstream_stream(proxy, upstream):
    stream_id = uuid.uuid4().hex
    token = make_token()
    # 200 chunks 50 ms apart: the upstream would run for 10 s unless told the client left.
    target = f"/stream?n=200&delay=0.05&id={stream_id}"
    with connect(proxy.port, timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: proxy\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())
        received = read_until(sock, lambda got: b"|1|" in got)
        assert received is not None, "proxy closed the stream early"
    assert b" 200 " in received.split(b"\r\n", 1)[0]

    def state():
        answer = requests.get(upstream.url + "/stub/stats", params={"id": stream_id}, timeout=5)
        return answer.json()["state"]
    assert wait_for(lambda: state() == "cancelled", timeout=3), state()
    assert wait_for(lambda: any(
        "outcome=client_gone" in line and claims_of(token)["token_id"] in line
        for line in proxy.output().splitlines()), timeout=2)


def test_stream_cut_by_upstream_stays_cut_for_the_client(proxy):
    before = scrape(proxy)
    with requests.get(proxy.url + "/stream?n=10&delay=0.02&abort=3", headers=bearer(make_token()),
                      stream=True, timeout=10) as response:
        assert response.status_code == 200
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in response.iter_content(chunk_size=None):
                received += chunk
    assert received.count(b"\xff\x00\n") == 3
    after = scrape(proxy)
    assert sample(after, "proxy_upstream_errors_total", kind="stream") \
        - sample(before, "proxy_upstream_errors_total", kind="stream") == 1


def test_upstream_down_is_502_json(proxy_to_nowhere):
    before = scrape(proxy_to_nowhere)
    response = requests.post(proxy_to_nowhere.url + "/inference/m", headers=bearer(make_token()),
                             data=b"{}", timeout=10)
    assert response.status_code == 502
    assert response.json() == {"status_code": 502, "message": "upstream is unavailable"}
    assert requests.get(proxy_to_nowhere.url + "/health", timeout=10).status_code == 502
    after = scrape(proxy_to_nowhere)
    assert sample(after, "proxy_upstream_errors_total", kind="connect") \
        - sample(before, "proxy_upstream_errors_total", kind="connect") == 2


def test_upstream_slow_to_answer_is_504_json(proxy):
    before = scrape(proxy)
    response = requests.get(proxy.url + "/slow-headers?delay=5", headers=bearer(make_token()),
                            timeout=10)
    assert response.status_code == 504
    body = response.json()
    assert body["status_code"] == 504 and "did not answer" in body["message"]
    after = scrape(proxy)
    assert sample(after, "proxy_upstream_errors_total", kind="timeout") \
        - sample(before, "proxy_upstream_errors_total", kind="timeout") == 1


def test_64_concurrent_streams_each_get_their_own_answer(proxy, upstream):
    chunks, delay = 5, 0.2

    def one(index: int) -> bytes:
        token = make_token(token_id=f"conc-{index}")
        response = requests.post(proxy.url + f"/stream?n={chunks}&delay={delay}&tag=c{index}",
                                 headers=bearer(token), data=b"p", timeout=30)
        assert response.status_code == 200
        return response.content

    with ThreadPoolExecutor(max_workers=64) as pool:
        bodies = list(pool.map(one, range(64)))
    for index, body in enumerate(bodies):
        assert body == b"".join(stream_chunk(f"c{index}", f"conc-{index}", j)
                                for j in range(chunks))
    # The proxy relayed the streams side by side, not one after another.
    peak = requests.get(upstream.url + "/stub/stats?peak=1", timeout=5).json()["peak"]
    assert peak >= 16, peak


def _open_stream(url: str, token: str, stream_id: str) -> requests.Response:
    """A stream that has sent its first chunk and is still running."""
    response = requests.get(url + f"/stream?n=20&delay=0.1&id={stream_id}", headers=bearer(token),
                            stream=True, timeout=10)
    assert response.status_code == 200
    # Keep the iterator on the response: dropped, it would close the connection too early.
    response.reader = response.iter_content(chunk_size=None)
    next(response.reader)
    return response


def test_per_token_limit_gives_429_and_frees_slots(proxy, upstream):
    token = make_token()
    ids = [uuid.uuid4().hex for _ in range(TOKEN_LIMIT)]
    streams = [_open_stream(proxy.url, token, stream_id) for stream_id in ids]

    refused = requests.get(proxy.url + "/echo", headers=bearer(token), timeout=5)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["status_code"] == 429
    other = requests.get(proxy.url + "/echo", headers=bearer(make_token()), timeout=5)
    assert other.status_code == 200

    # One stream abandoned by the client, one read to its end: both slots must come back.
    streams[1].close()
    streams[0].content
    assert wait_for(lambda: requests.get(upstream.url + "/stub/stats", params={"id": ids[1]},
                                         timeout=5).json()["state"] == "cancelled", timeout=3)
    again = wait_for(lambda: requests.get(proxy.url + "/echo", headers=bearer(token),
                                          timeout=5).status_code == 200, timeout=2)
    assert again
    reopened = [_open_stream(proxy.url, token, uuid.uuid4().hex) for _ in range(TOKEN_LIMIT)]
    for response in reopened:
        response.close()


# --- start-up, metrics, log -------------------------------------------------------------------

@pytest.mark.parametrize("env, names", [
    ({"JWT_SECRET": ""}, "JWT_SECRET"),
    ({"PROXY_PORT": "abc"}, "PROXY_PORT"),
    ({"PROXY_UPSTREAM_TIMEOUT": "-1"}, "PROXY_UPSTREAM_TIMEOUT"),
    ({"UPSTREAM_URL": "localhost:7000"}, "UPSTREAM_URL"),
])
def test_refuses_to_start_with_bad_config(env, names):
    full_env = {**os.environ, "JWT_SECRET": SECRET, "PROXY_PORT": str(free_port()),
                "PROXY_METRICS_PORT": str(free_port()), **env}
    full_env = {k: v for k, v in full_env.items() if v != ""}
    result = subprocess.run(proxy_argv(), env=full_env, cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and names in lines[0], lines
    assert "Traceback" not in result.stderr


def test_a_taken_metrics_port_stops_the_start_with_the_reason():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "JWT_SECRET": SECRET, "PROXY_HOST": "127.0.0.1",
               "PROXY_PORT": str(free_port()), "PROXY_METRICS_PORT": str(taken.getsockname()[1])}
        result = subprocess.run(proxy_argv(), env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode != 0  # gunicorn halts: the worker failed to boot, no respawn loop
    assert "address already in use" in result.stderr


def test_short_secret_warns_at_start():
    env = {**os.environ, "JWT_SECRET": "short", "PROXY_PORT": str(free_port())}
    result = subprocess.run(proxy_argv("--check-config"), env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "shorter than 32 bytes" in result.stderr


def test_metrics_count_what_was_sent(proxy):
    before = scrape(proxy)
    for _ in range(3):
        assert requests.get(proxy.url + "/echo", headers=bearer(make_token()),
                            timeout=5).status_code == 200
    requests.get(proxy.url + "/echo", timeout=5)
    requests.get(proxy.url + "/echo", headers=bearer(make_token(secret="x" * 40)), timeout=5)
    requests.get(proxy.url + "/error/404", headers=bearer(make_token()), timeout=5)
    requests.get(proxy.url + "/health", timeout=5)
    after = scrape(proxy)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)
    assert delta("proxy_requests_total", status="200") == 4  # three /echo and one /health
    assert delta("proxy_requests_total", status="401") == 2
    assert delta("proxy_requests_total", status="404") == 1
    assert delta("proxy_auth_failures_total", reason="missing_header") == 1
    assert delta("proxy_auth_failures_total", reason="bad_signature") == 1
    assert delta("proxy_upstream_errors_total", kind="connect") == 0
    assert sample(after, "proxy_open_responses") == 0


def test_one_log_line_per_request_without_token_or_prompt(proxy):
    token = make_token(team_id="team-log", token_id="tok-log")
    bad_token = make_token(secret="y" * 40)
    prompt = b"a very private prompt"
    response = requests.post(proxy.url + "/stream?n=3&delay=0.01&tag=log", data=prompt,
                             headers={**bearer(token), "X-Request-ID": "log-req-1"}, timeout=5)
    requests.get(proxy.url + "/echo", headers={**bearer(bad_token), "X-Request-ID": "log-req-2"},
                 timeout=5)

    def lines(request_id):
        return [line for line in proxy.output().splitlines() if f"request_id={request_id} " in line]
    assert wait_for(lambda: lines("log-req-1") and lines("log-req-2"), timeout=3)
    [line] = lines("log-req-1")
    for field in ("team_id=team-log", "token_id=tok-log", "status=200", "method=POST",
                  "path=/stream", f"bytes={len(response.content)}", "duration_ms="):
        assert field in line, line
    [refused] = lines("log-req-2")
    assert "status=401" in refused and "outcome=auth_bad_signature" in refused
    output = proxy.output()
    assert token not in output and bad_token not in output
    assert prompt.decode() not in output and "tag=log" not in output
