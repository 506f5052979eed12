"""Per-token rate limits through the real proxy in front of the real API server on the mock:
a burst over the limit gets 429s while the allowed requests complete, another token is not
affected, generated tokens are counted from the answers, and the window recovers."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from helpers import MODEL, bearer, make_token, sample, scrape, start_proxy, wait_for
from inference_api.mock.text import mock_answer

RPM = 3
# A day: no window ends during a burst, so every count in these tests is exact.
LONG_WINDOW = "86400"


@pytest.fixture(scope="module")
def limited(mock_server):
    with start_proxy(mock_server.url, PROXY_RATE_LIMIT_RPM=str(RPM),
                     PROXY_RATE_LIMIT_WINDOW=LONG_WINDOW) as server:
        yield server


@pytest.fixture(scope="module")
def token_limited(mock_server):
    with start_proxy(mock_server.url, PROXY_RATE_LIMIT_TPM="30",
                     PROXY_RATE_LIMIT_WINDOW=LONG_WINDOW) as server:
        yield server


def chat(proxy, token: str, max_tokens: int = 10, **extra) -> requests.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, **extra}
    return requests.post(proxy.url + "/v1/chat/completions", json=body, headers=bearer(token),
                         timeout=60)


def native(proxy, token: str) -> requests.Response:
    return requests.post(f"{proxy.url}/inference/{MODEL}",
                         json={"text": "burst", "max_tokens": 20},
                         headers=bearer(token), timeout=60)


def test_a_burst_over_the_limit_gets_429s_and_the_allowed_ones_complete(limited):
    token, other = make_token(), make_token()
    before = scrape(limited)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: native(limited, token), range(8)))
    done = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(done) == RPM and len(refused) == 8 - RPM
    assert all(a.text == mock_answer("burst", 20) for a in done)  # whole answers
    for answer in refused:
        assert answer.json()["status_code"] == 429
        assert "rate limit reached for this token" in answer.json()["message"]
        assert 1 <= int(answer.headers["Retry-After"]) <= 86400
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    assert native(limited, other).status_code == 200  # another token is unaffected
    after = scrape(limited)
    assert (sample(after, "proxy_rate_limited_total", limit="requests")
            - sample(before, "proxy_rate_limited_total", limit="requests")) == 8 - RPM


def test_openai_clients_see_their_usual_headers_and_error(limited):
    token = make_token()
    first = chat(limited, token)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert first.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit is set
    for _ in range(RPM - 1):
        assert chat(limited, token).status_code == 200
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_tokens_claims_override_the_setting(limited):
    unlimited, strict = make_token(rpm=0), make_token(rpm=1)
    assert all(native(limited, unlimited).status_code == 200 for _ in range(RPM + 2))
    assert native(limited, strict).status_code == 200
    assert native(limited, strict).status_code == 429


def test_generated_tokens_are_counted_from_the_answers(token_limited):
    token, other = make_token(), make_token()
    first = chat(token_limited, token, max_tokens=20)
    assert first.json()["usage"]["completion_tokens"] == 20
    assert first.headers["x-ratelimit-remaining-tokens"] == "30"  # before this answer's
    client = openai.OpenAI(base_url=token_limited.url + "/v1", api_key=token, max_retries=0)
    streamed = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20, stream=True,
        stream_options={"include_usage": True})
    assert [c.usage.completion_tokens for c in streamed if c.usage] == [20]
    refused = chat(token_limited, token)  # 40 tokens used of 30
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "30 tokens per" in refused.json()["error"]["message"]
    assert chat(token_limited, other).status_code == 200


def test_the_window_recovers(mock_server):
    # A one-second window: wait for the next one rather than assume how long anything takes.
    with start_proxy(mock_server.url, PROXY_RATE_LIMIT_RPM="1",
                     PROXY_RATE_LIMIT_WINDOW="1") as proxy:
        token = make_token()
        assert wait_for(lambda: native(proxy, token).status_code == 429, timeout=30)
        assert wait_for(lambda: native(proxy, token).status_code == 200, timeout=30)
