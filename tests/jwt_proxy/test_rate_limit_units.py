"""The rate limiter and the usage meter on their own: an injected clock instead of waiting."""
from __future__ import annotations

import asyncio
import json

import pytest

from proxy.claims import TokenPolicy
from proxy.errors import RequestError
from proxy.rate_store import MemoryRateStore
from proxy.ratelimit import RateLimiter, duration
from proxy.usage import UsageMeter


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(rpm=0, tpm=0, window_s=60.0, clock=None):
    return RateLimiter(MemoryRateStore(), rpm, tpm, window_s, clock or Clock())


def admit(rate: RateLimiter, key="t k", policy=TokenPolicy()):
    return asyncio.run(rate.admit(key, policy))


def test_requests_over_the_limit_are_refused_until_the_window_ends():
    clock = Clock(1_000_040.0)  # 40 s before its minute ends (1_000_020 + 60)
    rate = limiter(rpm=2, clock=clock)
    first, second = admit(rate), admit(rate)
    assert first.headers()["x-ratelimit-remaining-requests"] == "1"
    assert second.headers() == {"x-ratelimit-limit-requests": "2",
                                "x-ratelimit-remaining-requests": "0",
                                "x-ratelimit-reset-requests": "40s"}
    with pytest.raises(RequestError) as refused:
        admit(rate)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "40"
    assert refused.value.outcome == "rate_limited_requests"
    assert admit(rate, key="other token") is not None  # another token is unaffected
    clock.now += 40
    assert admit(rate).headers()["x-ratelimit-remaining-requests"] == "1"


def test_claims_override_the_settings_and_zero_means_no_limit():
    rate = limiter(rpm=1)
    assert admit(rate, policy=TokenPolicy(rpm=0)) is None
    admit(rate, key="a", policy=TokenPolicy(rpm=3))
    admit(rate, key="a", policy=TokenPolicy(rpm=3))
    admit(rate, key="a", policy=TokenPolicy(rpm=3))
    with pytest.raises(RequestError):
        admit(rate, key="a", policy=TokenPolicy(rpm=3))
    assert limiter().rpm == 0 and admit(limiter()) is None  # nothing set: nothing counted


def test_tokens_are_counted_after_the_answer_and_refuse_the_next_request():
    clock = Clock()
    rate = limiter(tpm=100, clock=clock)
    admission = admit(rate)
    assert admission.counts_tokens
    asyncio.run(rate.count_tokens(admission, 60))
    second = admit(rate)  # 60 < 100: admitted, and its answer may cross the limit
    assert second.headers()["x-ratelimit-remaining-tokens"] == "40"
    asyncio.run(rate.count_tokens(second, 60))
    with pytest.raises(RequestError) as refused:
        admit(rate)
    assert refused.value.outcome == "rate_limited_tokens"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 60
    assert admit(rate).headers()["x-ratelimit-remaining-tokens"] == "100"


def test_memory_store_forgets_finished_windows():
    store = MemoryRateStore()
    for key in range(10_001):
        asyncio.run(store.count_request(str(key), 1))
    asyncio.run(store.count_request("late", 2))
    assert len(store) == 1


def test_durations_are_written_as_openai_writes_them():
    assert [duration(s) for s in (0.2, 1, 59.5, 60, 361)] == ["1s", "1s", "1m0s", "1m0s", "6m1s"]


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)


@pytest.mark.parametrize("content_type, body, tokens", [
    ("application/json", json.dumps({"usage": {"completion_tokens": 7}}).encode(), 7),
    ("application/json", json.dumps({"usage": {"output_tokens": 9}}).encode(), 9),
    ("application/json; charset=utf-8",
     json.dumps({"responses": [{"generated_tokens": 3}, {"generated_tokens": 4}]}).encode(), 7),
    ("text/event-stream", sse({"choices": []}, {"choices": [], "usage": {"completion_tokens": 12}},
                              b"[DONE]"), 12),
    ("text/event-stream", sse({"type": "message_delta", "usage": {"output_tokens": 5}}), 5),
    ("text/event-stream", sse({"type": "response.completed",
                               "response": {"usage": {"output_tokens": 8}}}), 8),
    ("text/event-stream", sse({"choices": [1]}, {"choices": [2]}, {"choices": [3]}, b"[DONE]"), 3),
    ("text/plain; charset=utf-8", b"x" * 10, 3),
    ("application/json", b"{not json", 3),
])
def test_usage_meter_reads_what_the_answer_reports(content_type, body, tokens):
    meter = UsageMeter(content_type)
    for start in range(0, len(body), 7):  # in chunks that split events and lines
        meter.feed(body[start:start + 7])
    assert meter.tokens() == tokens
