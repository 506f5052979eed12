"""The HTTP server on the mock backend, through a real gunicorn process and Flask's test client."""
from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import (BAD_REQUESTS, MODEL, api_server, backend_process, health, post, post_body,
                     wait_for)
from inference_api.mock.text import mock_answer


def test_health_reports_ready_and_load(mock_server):
    response = requests.get(mock_server.url + "/health", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == MODEL
    assert body["max_users"] == 32  # the default: the fixture does not set MAX_USERS
    # Once the streams of earlier tests have ended, an idle server reports no load at all.
    idle = {"busy_rows": 0, "queued": 0, "sessions": 0}
    assert wait_for(lambda: {k: health(mock_server)[k] for k in idle} == idle), health(mock_server)
    # A finished request's row is kept for prefix reuse, and the row bookkeeping is sound.
    assert post(mock_server, {"text": "keep my row", "max_tokens": 2}).status_code == 200
    assert wait_for(lambda: health(mock_server)["cached_rows"] >= 1), health(mock_server)
    assert health(mock_server)["row_faults"] == []


def test_stream_is_chunked_text_derived_from_the_prompt(mock_server):
    response = post(mock_server, {"text": "alpha beta", "max_tokens": 7}, stream=True,
                    headers={"X-Request-ID": "my-request-1"})
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Request-ID"] == "my-request-1"
    chunks = [c.decode() for c in response.iter_content(chunk_size=None)]
    assert "".join(chunks) == mock_answer("alpha beta", 7)
    assert len(chunks) > 1  # streamed as made, not buffered into one answer


def test_first_chunk_arrives_before_the_generation_ends(mock_server):
    started = time.monotonic()
    response = post(mock_server, {"text": "slow stream", "max_tokens": 60}, stream=True)
    chunks = response.iter_content(chunk_size=None)
    first = next(chunks)
    first_at = time.monotonic() - started
    rest = b"".join(chunks)
    total = time.monotonic() - started
    assert first and rest
    assert first_at < total / 2  # 60 steps of 5 ms: the first chunk comes long before the end


def test_predictions_wraps_the_prompt_in_the_chat_template(mock_server):
    plain = post(mock_server, {"text": "hello there", "max_tokens": 3, "return_prompt": True})
    chat = post(mock_server, {"text": "hello there", "max_tokens": 3, "return_prompt": True},
                route="predictions")
    assert plain.status_code == chat.status_code == 200
    assert plain.text == "hello there" + mock_answer("hello there", 3)
    assert chat.text == plain.text  # the answer is derived from the user's text in both


def test_numeric_strings_are_accepted_as_numbers(mock_server):
    response = post(mock_server, {"text": "a b", "max_tokens": "4", "temperature": "1",
                                  "top_k": "5", "top_p": "0.5", "return_prompt": False,
                                  "session_id": "client-chosen", "seed": "3",
                                  "repetition_penalty": "1.1"})
    assert response.status_code == 200
    assert response.text == mock_answer("a b", 4)


def test_stop_sequence_ends_the_answer_before_the_stop(mock_server):
    full = mock_answer("one two three", 12)
    response = post(mock_server, {"text": "one two three", "max_tokens": 12,
                                  "stop_sequence": ["wo4 thr"]})
    assert response.text == full[:full.index("wo4 thr")]
    response = post(mock_server, {"text": "one two three", "max_tokens": 12,
                                  "stop_sequence": "three5"})
    assert response.text == full[:full.index("three5")]


@pytest.mark.parametrize("name,body,expected", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_400_naming_the_problem(mock_server, name, body, expected):
    response = post_body(mock_server, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["status_code"] == 400
    assert expected in payload["message"]


def test_prompt_too_long_message_gives_both_counts(mock_server):
    response = post(mock_server, {"text": "word " * 2040, "max_tokens": 10})
    assert response.status_code == 400
    assert "2040 tokens" in response.json()["message"] and "2048" in response.json()["message"]


def test_routes_methods_models_and_size_limit(mock_server):
    response = post(mock_server, {"text": "a"}, model="gpt-17")
    assert response.status_code == 404 and MODEL in response.json()["message"]
    response = requests.get(f"{mock_server.url}/inference/{MODEL}")
    assert response.status_code == 405 and response.json()["status_code"] == 405
    response = requests.get(f"{mock_server.url}/no/such/route")
    assert response.status_code == 404 and response.json()["status_code"] == 404
    response = requests.post(f"{mock_server.url}/inference/{MODEL}",
                             data=json.dumps({"text": "x" * (2 << 20)}),
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["status_code"] == 413


def test_many_concurrent_streams_never_mix(mock_server):
    def one(i):
        prompt = f"client{i} asks question{i} number{i * 7}"
        response = post(mock_server, {"text": prompt, "max_tokens": 20 + i % 11}, stream=True)
        return prompt, 20 + i % 11, b"".join(response.iter_content(chunk_size=None)).decode()

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    for prompt, n, text in results:
        assert text == mock_answer(prompt, n)


def test_abandoned_streams_free_rows_and_sessions(mock_server):
    def abandon(i):
        response = post(mock_server, {"text": f"abandon{i}", "max_tokens": 2000}, stream=True)
        next(response.iter_content(chunk_size=None))
        response.close()

    with ThreadPoolExecutor(25) as pool:
        list(pool.map(abandon, range(100)))
    assert wait_for(lambda: health(mock_server)["busy_rows"] == 0
                    and health(mock_server)["queued"] == 0 and health(mock_server)["sessions"] == 0)


@pytest.mark.processes
def test_full_queue_gets_503_with_retry_after():
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "20", "MAX_USERS": "2",
                     "MAX_QUEUE": "2"}) as server:
        streams = [post(server, {"text": f"hold{i}", "max_tokens": 300}, stream=True)
                   for i in range(4)]
        assert all(s.status_code == 200 for s in streams)
        assert wait_for(lambda: health(server)["busy_rows"] == 2 and health(server)["queued"] == 2)
        refused = post(server, {"text": "one too many", "max_tokens": 3})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert "waiting" in refused.json()["message"]
        for s in streams:
            s.close()
        assert wait_for(lambda: post(server, {"text": "later", "max_tokens": 3}).status_code == 200)


@pytest.mark.processes
def test_backend_killed_mid_stream_ends_streams_then_recovers():
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "10"}) as server:
        old = backend_process(server)
        responses = [post(server, {"text": f"victim{i}", "max_tokens": 1000}, stream=True)
                     for i in range(3)]
        readers = [response.iter_content(chunk_size=None) for response in responses]
        for reader in readers:
            next(reader)
        assert wait_for(lambda: health(server)["busy_rows"] == 3)
        old.send_signal(signal.SIGKILL)
        for reader in readers:
            # Cut without the final chunk: no client can take the rest for a complete answer.
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                b"".join(reader)
        # The server reports the death of that very backend and that it starts another.
        assert wait_for(lambda: any(str(old.pid) in line and "restarting" in line
                                    for line in server.output().splitlines()), 30), server.output()
        assert wait_for(lambda: requests.get(server.url + "/health").status_code == 200, 60)
        assert backend_process(server).pid != old.pid
        assert post(server, {"text": "alive again", "max_tokens": 3}).text == \
            mock_answer("alive again", 3)


def test_flask_test_client_validates_and_streams():
    from inference_api.config import Config
    from inference_api.http.app import create_server, engine_of

    app = create_server(Config(mock_model=True, mock_step_ms=1))
    engine = engine_of(app)
    try:
        client = app.test_client()
        assert wait_for(lambda: client.get("/health").status_code == 200, 60)
        response = client.post(f"/inference/{MODEL}", json={"text": "x y", "max_tokens": 5})
        assert response.status_code == 200 and response.get_data(as_text=True) == mock_answer("x y", 5)
        response = client.post(f"/inference/{MODEL}", json={"text": "x", "top_p": 2})
        assert response.status_code == 400 and "top_p=2" in response.get_json()["message"]
    finally:
        engine.link.stop()


def test_a_body_left_unread_never_breaks_the_connections_next_request(mock_server):
    """An answer given before the body was read (a 404 for an unknown model) reads the rest, so
    the next request on the same connection is answered; a body too large to read through
    says Connection: close instead of leaving its bytes to be taken for the next request."""
    session = requests.Session()
    for size in (100_000, 2_000_000):
        body = json.dumps({"text": "x" * size, "max_tokens": 2})
        for _ in range(3):
            refused = session.post(f"{mock_server.url}/inference/no-such-model", data=body,
                                   headers={"Content-Type": "application/json"}, timeout=30)
            assert refused.status_code == 404
            assert refused.headers["Connection"] == "keep-alive"
            answer = session.post(f"{mock_server.url}/inference/{MODEL}", timeout=30,
                                  json={"text": "a b", "max_tokens": 2})
            assert answer.text == mock_answer("a b", 2)
    huge = json.dumps({"text": "x" * 9_000_000}).encode()
    for path in ("/inference/no-such-model", f"/inference/{MODEL}"):
        refused = session.post(mock_server.url + path, data=huge, timeout=30,
                               headers={"Content-Type": "application/json"})
        assert refused.status_code in (404, 413)
        assert refused.headers["Connection"] == "close"
        answer = session.post(f"{mock_server.url}/inference/{MODEL}", timeout=30,
                              json={"text": "a b", "max_tokens": 2})
        assert answer.text == mock_answer("a b", 2)
