"""The proxy's own errors: OpenAI's shape under /v1/, the native shape on every other path."""
from __future__ import annotations

import json
import signal

import openai
import pytest
import requests

from helpers import bearer, make_token, start_proxy, wait_for
from net import as_response, exchange
from stub_upstream import RawUpstream

pytestmark = pytest.mark.processes  # servers of its own: a stub upstream and proxies

TOKEN_LIMIT = 1
MAX_BODY = 2048
BODY_TIMEOUT_S = 1
UPSTREAM_TIMEOUT_S = 1
CHAT = "/v1/chat/completions"
NATIVE = "/echo"
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def proxy(upstream):
    with start_proxy(upstream.url, PROXY_MAX_STREAMS_PER_TOKEN=str(TOKEN_LIMIT),
                     PROXY_MAX_BODY_BYTES=str(MAX_BODY),
                     PROXY_BODY_TIMEOUT=str(BODY_TIMEOUT_S)) as server:
        yield server


@pytest.fixture(scope="module")
def proxy_to_silence():
    """A proxy whose upstream takes connections and never answers."""
    with RawUpstream() as silent, start_proxy(
            silent.url, health_path="/metrics",
            PROXY_UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT_S)) as server:
        yield server


def openai_error(response: requests.Response, status: int, kind: str, code: str | None) -> str:
    """The message of an answer in OpenAI's error shape, checked against status, type and code."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error == {"message": error["message"], "type": kind, "param": None, "code": code}
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def native_error(response: requests.Response, status: int) -> str:
    """The message of an answer in the native error shape with this status."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body == {"status_code": status, "message": body["message"]}
    return body["message"]


def raw_answer(port: int, *parts: bytes) -> requests.Response:
    """Send parts as they are (no client normalises them), 0.3 s apart; parse the answer."""
    return as_response(exchange(port, *parts, pause=0.3))


def held_stream(proxy, token: str) -> requests.Response:
    """A stream through the proxy that has sent its first chunk and holds the token's slot."""
    response = requests.get(proxy.url + "/stream?n=50&delay=0.1", headers=bearer(token),
                            stream=True, timeout=10)
    assert response.status_code == 200
    response.reader = response.iter_content(chunk_size=None)
    next(response.reader)
    return response


def client(proxy, api_key: str) -> openai.OpenAI:
    """The official client on the proxy's /v1, without retries so that the error surfaces."""
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=api_key, max_retries=0)


# --- 401 --------------------------------------------------------------------------------------

REFUSALS = {
    "missing header": ({}, "missing Authorization"),
    "not a jwt": (bearer("not-a-jwt"), "well-formed"),
    "expired": (bearer(make_token(exp=1_000_000_000)), "expired"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_401_under_v1_is_openai_shaped_and_keeps_the_challenge(proxy, case):
    headers, says = REFUSALS[case]
    response = requests.post(proxy.url + CHAT, headers=headers, json=CHAT_BODY, timeout=5)
    message = openai_error(response, 401, "authentication_error", "invalid_api_key")
    assert says in message
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="inference-api"')


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models?limit=1", "/%761/models"])
def test_every_path_the_api_routes_under_v1_gets_openai_shape(proxy, path):
    response = requests.get(proxy.url + path, timeout=5)
    openai_error(response, 401, "authentication_error", "invalid_api_key")


@pytest.mark.parametrize("path", [NATIVE, "/inference/m", "/v1", "/v2/models", "/x/v1/models"])
def test_401_elsewhere_keeps_the_native_shape(proxy, path):
    response = requests.post(proxy.url + path, json=CHAT_BODY, timeout=5)
    assert "missing Authorization" in native_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_openai_client_raises_authentication_error_with_the_message(proxy):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(proxy, "not-a-jwt").chat.completions.create(model="m",
                                                            messages=CHAT_BODY["messages"])
    err = caught.value
    assert err.status_code == 401
    assert "token is not a well-formed JWT" in err.message
    assert (err.type, err.code, err.param) == ("authentication_error", "invalid_api_key", None)


# --- 4xx about the request ----------------------------------------------------------------------

def test_413_under_v1_is_openai_shaped(proxy):
    response = requests.post(proxy.url + CHAT, headers=bearer(make_token()),
                             data=b"x" * (MAX_BODY + 1), timeout=5)
    assert str(MAX_BODY) in openai_error(response, 413, "invalid_request_error", None)
    response = requests.post(proxy.url + NATIVE, headers=bearer(make_token()),
                             data=b"x" * (MAX_BODY + 1), timeout=5)
    assert str(MAX_BODY) in native_error(response, 413)


def test_408_under_v1_is_openai_shaped(proxy):
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {make_token()}\r\n"
            "Content-Length: 10\r\n\r\n").encode()
    message = openai_error(raw_answer(proxy.port, head), 408, "invalid_request_error", None)
    assert "did not arrive" in message


@pytest.mark.parametrize("path, shape", [("/v1/x/../models", "openai"),
                                         ("/echo/../metrics", "native")])
def test_refused_target_is_400_in_its_paths_shape(proxy, path, shape):
    response = raw_answer(proxy.port, f"GET {path} HTTP/1.1\r\nHost: proxy\r\n"
                          "Connection: close\r\n\r\n".encode())
    if shape == "openai":
        message = openai_error(response, 400, "invalid_request_error", None)
    else:
        message = native_error(response, 400)
    assert "'..'" in message


def test_bad_chunked_body_under_v1_is_openai_shaped(proxy):
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {make_token()}\r\n"
            "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    # Sent after the headers: the proxy has the path when it reads the body and fails on it.
    response = raw_answer(proxy.port, head, b"zz\r\nabc\r\n0\r\n\r\n")
    message = openai_error(response, 400, "invalid_request_error", None)
    assert "chunk" in message.lower()


def test_request_that_cannot_be_parsed_gets_the_native_shape(proxy):
    # The path of a request whose headers are broken is not known: no shape can be chosen by it.
    response = raw_answer(proxy.port, f"GET {CHAT} HTTP/1.1\r\nHost: proxy\r\n"
                          "Bad Header\r\n\r\n".encode())
    assert native_error(response, 400).startswith("malformed request")


# --- 429 --------------------------------------------------------------------------------------

def test_429_under_v1_is_openai_shaped_with_retry_after(proxy):
    token = make_token()
    stream = held_stream(proxy, token)
    try:
        response = requests.post(proxy.url + CHAT, headers=bearer(token), json=CHAT_BODY,
                                 timeout=5)
        message = openai_error(response, 429, "rate_limit_exceeded", "rate_limit_exceeded")
        assert f"{TOKEN_LIMIT} requests in flight" in message
        assert response.headers["Retry-After"] == "1"
        response = requests.post(proxy.url + NATIVE, headers=bearer(token), timeout=5)
        assert "requests in flight" in native_error(response, 429)
        assert response.headers["Retry-After"] == "1"
    finally:
        stream.close()


def test_openai_client_raises_rate_limit_error(proxy):
    token = make_token()
    stream = held_stream(proxy, token)
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            client(proxy, token).chat.completions.create(model="m",
                                                         messages=CHAT_BODY["messages"])
    finally:
        stream.close()
    err = caught.value
    assert err.status_code == 429 and "requests in flight" in err.message
    assert (err.type, err.code) == ("rate_limit_exceeded", "rate_limit_exceeded")
    assert err.response.headers["Retry-After"] == "1"


# --- 5xx --------------------------------------------------------------------------------------

def test_502_under_v1_is_openai_shaped(proxy_to_nowhere):
    response = requests.post(proxy_to_nowhere.url + CHAT, headers=bearer(make_token()),
                             json=CHAT_BODY, timeout=10)
    message = openai_error(response, 502, "server_error", "upstream_unavailable")
    assert message == "upstream is unavailable"
    response = requests.post(proxy_to_nowhere.url + NATIVE, headers=bearer(make_token()),
                             timeout=10)
    assert native_error(response, 502) == "upstream is unavailable"
    assert native_error(requests.get(proxy_to_nowhere.url + "/health", timeout=10), 502)


def test_openai_client_raises_internal_server_error_for_a_502(proxy_to_nowhere):
    with pytest.raises(openai.InternalServerError) as caught:
        client(proxy_to_nowhere, make_token()).models.list()
    err = caught.value
    assert err.status_code == 502 and "upstream is unavailable" in err.message
    assert (err.type, err.code) == ("server_error", "upstream_unavailable")


def test_504_under_v1_is_openai_shaped(proxy_to_silence):
    response = requests.get(proxy_to_silence.url + "/v1/models", headers=bearer(make_token()),
                            timeout=10)
    message = openai_error(response, 504, "server_error", "upstream_timeout")
    assert "did not answer" in message
    response = requests.get(proxy_to_silence.url + NATIVE, headers=bearer(make_token()),
                            timeout=10)
    assert "did not answer" in native_error(response, 504)


def test_503_while_draining_is_openai_shaped_under_v1(upstream):
    with start_proxy(upstream.url, PROXY_DRAIN_TIMEOUT="60") as proxy:
        stream = held_stream(proxy, make_token())  # keeps the draining proxy up
        try:
            proxy.signal(signal.SIGTERM)
            assert wait_for(lambda: requests.get(proxy.url + "/health",
                                                 timeout=10).status_code == 503, timeout=15)
            response = requests.post(proxy.url + CHAT, headers=bearer(make_token()),
                                     json=CHAT_BODY, timeout=10)
            message = openai_error(response, 503, "server_error", "unavailable")
            assert "shutting down" in message
            assert response.headers["Retry-After"] == "5"
            health = requests.get(proxy.url + "/health", timeout=10)
            assert native_error(health, 503) == "the proxy is shutting down"
            assert health.headers["Retry-After"] == "5"
        finally:
            stream.close()


# --- relayed errors -------------------------------------------------------------------------------

def test_upstream_errors_under_v1_are_relayed_unchanged(proxy):
    # The stub answers unknown paths in the native shape: the proxy must not rewrite it.
    response = requests.get(proxy.url + "/v1/no-such-route", headers=bearer(make_token()),
                            timeout=5)
    assert response.status_code == 404
    assert json.loads(response.content) == {"status_code": 404, "message": "no such route"}
