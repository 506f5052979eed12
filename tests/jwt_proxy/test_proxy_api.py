"""The JWT proxy in front of the real Inference API server: on the mock, and on the real model."""
from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from helpers import MODEL, api_server, bearer, health, make_token, start_proxy, wait_for
from inference_api.mock.text import mock_answer
from net import connect


@pytest.fixture(scope="module")
def mock_proxy(mock_server):
    """The proxy in front of the shared mock API server."""
    with start_proxy(mock_server.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def real_proxy(real_server):
    """The proxy in front of the shared real-model API server."""
    with start_proxy(real_server.url) as proxy:
        yield proxy


def stream(url: str, body: dict, token: str | None = None, route: str = "inference"):
    headers = bearer(token) if token else {}
    return requests.post(f"{url}/{route}/{MODEL}", json=body, headers=headers, stream=True,
                         timeout=60)


def test_stream_through_proxy_equals_direct_byte_for_byte(mock_proxy, mock_server):
    body = {"text": "proxy parity check", "max_tokens": 25}
    direct = stream(mock_server.url, body)
    proxied = stream(mock_proxy.url, body, make_token())
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content == mock_answer("proxy parity check", 25).encode()
    assert proxied.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_first_chunk_comes_through_before_the_generation_ends(mock_proxy):
    response = stream(mock_proxy.url, {"text": "unbuffered", "max_tokens": 200}, make_token())
    chunks = response.iter_content(chunk_size=None)
    first = next(chunks)
    first_at = time.monotonic()
    rest = b"".join(chunks)
    assert first and rest
    assert time.monotonic() - first_at > 0.3  # 200 steps of 5 ms were still to come


def test_no_token_is_refused_before_reaching_the_api(mock_proxy, mock_server):
    response = stream(mock_proxy.url, {"text": "sneaky", "max_tokens": 5})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_errors_pass_through_unchanged(mock_proxy):
    token = make_token()
    response = stream(mock_proxy.url, {"text": "a", "top_k": 0}, token)
    assert response.status_code == 400 and "top_k=0" in response.json()["message"]
    response = requests.post(f"{mock_proxy.url}/inference/other-model", json={"text": "a"},
                             headers=bearer(token))
    assert response.status_code == 404 and MODEL in response.json()["message"]


def test_openai_errors_have_one_shape_whether_the_proxy_or_the_api_answered(mock_proxy):
    url = f"{mock_proxy.url}/v1/chat/completions"
    body = {"model": "other-model", "messages": [{"role": "user", "content": "hi"}]}
    by_proxy = requests.post(url, json=body, timeout=10)
    by_api = requests.post(url, json=body, headers=bearer(make_token()), timeout=10)
    assert (by_proxy.status_code, by_api.status_code) == (401, 404)
    assert list(by_proxy.json()) == list(by_api.json()) == ["error"]
    assert sorted(by_proxy.json()["error"]) == sorted(by_api.json()["error"])
    assert by_proxy.json()["error"]["code"] == "invalid_api_key"
    assert by_api.json()["error"]["code"] == "model_not_found"
    client = openai.OpenAI(base_url=f"{mock_proxy.url}/v1", api_key="not-a-jwt", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="not a well-formed JWT"):
        client.chat.completions.create(model=MODEL, messages=body["messages"])
    client = openai.OpenAI(base_url=f"{mock_proxy.url}/v1", api_key=make_token(), max_retries=0)
    with pytest.raises(openai.NotFoundError, match="other-model"):
        client.chat.completions.create(**body)


def test_client_disconnect_through_proxy_frees_the_row(mock_proxy, mock_server):
    token = make_token()
    responses = [stream(mock_proxy.url, {"text": f"leave{i}", "max_tokens": 2000}, token)
                 for i in range(5)]
    # Keep each stream's iterator: dropping it would close the connection before we mean to.
    readers = [response.iter_content(chunk_size=None) for response in responses]
    for reader in readers:
        next(reader)
    assert wait_for(lambda: health(mock_server)["busy_rows"] >= 5)
    for response in responses:
        response.close()
    assert wait_for(lambda: health(mock_server)["busy_rows"] == 0
                    and health(mock_server)["sessions"] == 0)


def test_64_concurrent_streams_through_proxy_all_complete(mock_proxy):
    token = make_token()

    def one(i):
        prompt = f"through proxy {i} request{i}"
        response = stream(mock_proxy.url, {"text": prompt, "max_tokens": 15 + i % 9}, token)
        return response.status_code, response.content.decode(), mock_answer(prompt, 15 + i % 9)

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert all(status == 200 and got == want for status, got, want in results)


@pytest.mark.slow
def test_real_model_stream_through_proxy_equals_direct(real_proxy, real_server):
    body = {"text": "The three primary colors are", "max_tokens": 20, "temperature": 0}
    direct = stream(real_server.url, body).content
    proxied = stream(real_proxy.url, body, make_token()).content
    assert proxied == direct and direct


@pytest.mark.slow
def test_real_model_disconnect_through_proxy_frees_the_row(real_proxy, real_server):
    response = stream(real_proxy.url, {"text": "Write a long story.", "max_tokens": 900,
                                       "ignore_eos": True}, make_token())
    reader = response.iter_content(chunk_size=None)
    next(reader)
    assert wait_for(lambda: health(real_server)["busy_rows"] == 1, 30)
    response.close()
    assert wait_for(lambda: health(real_server)["busy_rows"] == 0, 30)


def test_request_id_with_every_allowed_character_survives_proxy_and_api(mock_proxy, mock_server):
    request_id = "Ab9._:@/+=-" + uuid.uuid4().hex[:8]
    response = requests.post(f"{mock_proxy.url}/inference/{MODEL}",
                             json={"text": "id", "max_tokens": 3}, timeout=60,
                             headers={**bearer(make_token()), "X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    # The API kept the same id: its own log line names it.
    assert wait_for(lambda: request_id in mock_server.output())
    assert wait_for(lambda: f"request_id={request_id} " in mock_proxy.output())


def test_client_leaving_a_non_streamed_request_frees_the_row(mock_proxy, mock_server):
    # A non-streamed answer is silent while it generates: only the closed connection can tell
    # the API to stop, and the proxy must pass that on at once, not when it next writes.
    body = json.dumps({"model": MODEL, "prompt": "leave me", "max_tokens": 1500}).encode()
    request_id = f"leave-{uuid.uuid4().hex}"
    with connect(mock_proxy.port, timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: proxy\r\n"
                     + f"Authorization: Bearer {make_token()}\r\n".encode()
                     + f"X-Request-ID: {request_id}\r\n".encode()
                     + b"Content-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert wait_for(lambda: health(mock_server)["busy_rows"] >= 1)
    assert wait_for(lambda: health(mock_server)["busy_rows"] == 0
                    and health(mock_server)["sessions"] == 0, timeout=15), health(mock_server)
    # Cancelled, not run to its 1500 tokens: the rows were freed by the disconnect.
    assert wait_for(lambda: api_log_line(mock_server, request_id))
    assert "finish=cancelled" in api_log_line(mock_server, request_id)


def api_log_line(server, request_id: str) -> str:
    """The API's request log line (the one with finish=) for one request id, or ''."""
    return next((line for line in server.output().splitlines()
                 if f"request {request_id} " in line and " finish=" in line), "")


@pytest.mark.processes
def test_idle_timeout_answers_504_and_the_api_stops_the_generation():
    """A non-streamed answer silent past PROXY_UPSTREAM_TIMEOUT: 504, and its rows are freed."""
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "20"}) as api, \
            start_proxy(api.url, PROXY_UPSTREAM_TIMEOUT="2") as proxy:
        # 2,000 tokens at 20 ms: a 40 s generation, silent until its end.
        answer = requests.post(f"{proxy.url}/v1/completions", headers=bearer(make_token()),
                               json={"model": MODEL, "prompt": "long", "max_tokens": 2000},
                               timeout=60)
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "upstream_timeout"
        assert wait_for(lambda: health(api)["sessions"] == 0 and health(api)["busy_rows"] == 0,
                        timeout=20), health(api)


@pytest.mark.processes
def test_a_request_waiting_for_a_row_gets_a_status_line_then_its_answer_or_a_cut():
    """Waiting for a row: the answer within the idle timeout, a visible cut past it, never a
    connection closed without a status line."""
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "20", "MAX_USERS": "1"}) as api, \
            start_proxy(api.url, PROXY_UPSTREAM_TIMEOUT="30") as patient, \
            start_proxy(api.url, PROXY_UPSTREAM_TIMEOUT="1") as impatient:
        for proxy, complete in ((patient, True), (impatient, False)):
            # The only row is busy for 3 s (150 tokens at 20 ms).
            first = requests.post(f"{api.url}/inference/{MODEL}",
                                  json={"text": "a", "max_tokens": 150}, stream=True, timeout=60)
            first_chunks = first.iter_content(chunk_size=None)  # kept: dropping it closes
            next(first_chunks)
            waiting = requests.post(f"{proxy.url}/inference/{MODEL}", headers=bearer(make_token()),
                                    json={"text": "b c", "max_tokens": 5}, stream=True, timeout=60)
            assert waiting.status_code == 200
            if complete:
                assert b"".join(waiting.iter_content(chunk_size=None)).decode() == \
                    mock_answer("b c", 5)
            else:
                with pytest.raises(requests.exceptions.ChunkedEncodingError):
                    b"".join(waiting.iter_content(chunk_size=None))
            first.close()
            assert wait_for(lambda: health(api)["sessions"] == 0, timeout=20), health(api)
