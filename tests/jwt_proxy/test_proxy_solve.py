"""/solve/math and /solve/coding through the real proxy in front of the real API server on the
mock: a token is required, the `models` claim applies to the body's `model`, and the solution's
tokens count against the token's tpm as they do on the other routes."""
from __future__ import annotations

import json

import pytest
import requests

from helpers import MODEL, bearer, make_token, start_proxy

LONG_WINDOW = "86400"  # a day: no window ends during a test, so every count is exact


@pytest.fixture(scope="module")
def proxy(mock_server):
    with start_proxy(mock_server.url, PROXY_RATE_LIMIT_TPM="30",
                     PROXY_RATE_LIMIT_WINDOW=LONG_WINDOW) as server:
        yield server


def solve(proxy, kind: str, body: dict, headers: dict, **kw) -> requests.Response:
    return requests.post(f"{proxy.url}/solve/{kind}", json=body, headers=headers, timeout=60,
                         **kw)


@pytest.mark.parametrize("kind", ["math", "coding"])
def test_a_token_is_required(proxy, kind):
    missing = solve(proxy, kind, {"problem": "1 + 1"}, {})
    assert missing.status_code == 401
    assert set(missing.json()) == {"status_code", "message"}
    forged = solve(proxy, kind, {"problem": "1 + 1"},
                   bearer(make_token(secret="another-secret-" + "x" * 40)))
    assert forged.status_code == 401


@pytest.mark.parametrize("kind, field", [("math", "answer"), ("coding", "code")])
def test_answers_and_streams_are_relayed(proxy, kind, field):
    headers = bearer(make_token())
    whole = solve(proxy, kind, {"problem": "what is two plus two", "max_new_tokens": 5},
                  headers)
    assert whole.status_code == 200, whole.text
    assert whole.json()[field] is None and whole.json()["usage"]["completion_tokens"] == 5
    streamed = solve(proxy, kind, {"problem": "what is two plus two", "max_new_tokens": 5,
                                   "stream": True}, headers, stream=True)
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    data = [json.loads(line[len(b"data: "):]) for line in streamed.iter_lines() if line]
    assert "".join(event.get("text", "") for event in data[:-1]) == whole.json()["solution"]
    assert data[-1]["solution"] == whole.json()["solution"] and field in data[-1]


def test_a_bad_body_gets_the_apis_400(proxy):
    response = solve(proxy, "math", {"problem": "x", "temperature": 3}, bearer(make_token()))
    assert response.status_code == 400
    assert "temperature" in response.json()["message"]


def test_the_models_claim_applies_to_the_model_in_the_body(proxy):
    allowed = bearer(make_token(models=["Smol*"]))
    named = solve(proxy, "math", {"problem": "hi", "max_new_tokens": 2, "model": MODEL}, allowed)
    assert named.status_code == 200, named.text
    # Naming none would get the server's default model, which the proxy does not know.
    unnamed = solve(proxy, "math", {"problem": "hi", "max_new_tokens": 2}, allowed)
    assert unnamed.status_code == 403 and "name one" in unnamed.json()["message"]
    refused = solve(proxy, "coding", {"problem": "hi", "model": MODEL},
                    bearer(make_token(models=["other-*"])))
    assert refused.status_code == 403
    assert refused.json() == {"status_code": 403,
                              "message": f'this token may not use the model "{MODEL}"'}


def test_the_solutions_tokens_count_against_the_tokens_tpm(proxy):
    headers = bearer(make_token())
    body = {"problem": "count my tokens", "max_new_tokens": 12}
    first = solve(proxy, "math", body, headers)
    assert first.headers["x-ratelimit-remaining-tokens"] == "30"  # before this answer's
    # The stream's tokens come from the usage of its last event: 12, not one per event.
    streamed = solve(proxy, "coding", {**body, "stream": True}, headers, stream=True)
    assert streamed.headers["x-ratelimit-remaining-tokens"] == "18"
    streamed.content  # read to its end: the proxy counts once the answer is relayed
    third = solve(proxy, "math", body, headers)
    assert third.headers["x-ratelimit-remaining-tokens"] == "6"
    refused = solve(proxy, "math", body, headers)  # 36 tokens used of 30
    assert refused.status_code == 429 and "30 tokens per" in refused.json()["message"]
