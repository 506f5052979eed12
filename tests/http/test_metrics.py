"""GET /metrics of the API, and of the proxy in front of it, after known traffic on the mock."""
from __future__ import annotations

import pytest
import requests

from helpers import (MODEL, api_server, bearer, make_token, post, sample, scrape, start_proxy,
                     wait_for)

pytestmark = pytest.mark.processes  # a server of its own, so counts are only its tests'

GENERATIONS = ("inference_e2e_latency_seconds_count", "inference_time_to_first_token_seconds_count",
               "inference_queue_time_seconds_count")


@pytest.fixture(scope="module")
def api():
    """A server of its own, so that no other test's traffic lands in its counters."""
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "5"}) as server:
        yield server


class Delta:
    """What changed in a server's metrics between two scrapes."""

    def __init__(self, server):
        self.server, self.before = server, scrape(server)

    def stop(self) -> "Delta":
        self.after = scrape(self.server)
        return self

    def __call__(self, name: str, **labels) -> float:
        return sample(self.after, name, **labels) - sample(self.before, name, **labels)


def test_counts_match_the_traffic_sent(api):
    delta = Delta(api)
    assert post(api, {"text": "one two three", "max_tokens": 5}).status_code == 200
    assert requests.post(api.url + "/v1/completions", json={
        "model": MODEL, "prompt": "four five", "max_tokens": 7}).status_code == 200
    assert requests.post(api.url + "/generate", json={
        "text": "six", "max_tokens": 4, "num_samples": 2}).status_code == 200
    assert post(api, {"text": "a", "temperature": 9}).status_code == 400
    assert requests.post(api.url + "/v1/completions", json={
        "model": MODEL, "prompt": "a", "logprobs": 6}).status_code == 400
    delta.stop()
    assert delta("inference_requests_total", route="/inference/<model_id>", status="200") == 1
    assert delta("inference_requests_total", route="/inference/<model_id>", status="400") == 1
    assert delta("inference_requests_total", route="/v1/completions", status="200") == 1
    assert delta("inference_requests_total", route="/v1/completions", status="400") == 1
    assert delta("inference_requests_total", route="/generate", status="200") == 1
    # Four generations (the /generate request had two samples); refused requests make none.
    for name in GENERATIONS:
        assert delta(name, model=MODEL) == 4, name
    assert delta("inference_generations_finished_total", model=MODEL, finish_reason="length") == 4
    assert delta("inference_generation_tokens_total", model=MODEL) == 5 + 7 + 4 * 2
    assert delta("inference_prompt_tokens_total", model=MODEL) == 3 + 2 + 1 * 2
    # One inter-token gap per token after the first batch of each generation.
    tokens = 5 + 7 + 4 * 2
    assert 0 < delta("inference_inter_token_latency_seconds_count", model=MODEL) <= tokens - 4
    assert delta("inference_generations_finished_total", model=MODEL,
                 finish_reason="cancelled") == 0


def test_prompt_tokens_found_in_the_cache_are_reported_and_counted(api):
    prompt = "a long system prompt shared by every request of this test " * 3  # 33 mock tokens

    def complete(question: str) -> dict:
        response = requests.post(api.url + "/v1/completions", json={
            "model": MODEL, "prompt": prompt + question, "max_tokens": 3})
        assert response.status_code == 200
        return response.json()["usage"]

    delta = Delta(api)
    first = complete("what is one?")
    again = complete("what is one?")
    other = complete("what is two?")
    delta.stop()
    assert first["prompt_tokens"] == 36
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    assert again["prompt_tokens_details"] == {"cached_tokens": 35}  # all but the last token
    assert other["prompt_tokens_details"] == {"cached_tokens": 35}  # "what is" is shared too
    assert delta("inference_prompt_cached_tokens_total", model=MODEL) == 70
    assert delta("inference_prompt_tokens_total", model=MODEL) == 3 * 36


def test_gauges_follow_the_load_and_cancellations_are_counted(api):
    delta = Delta(api)
    streams = [post(api, {"text": f"hold{i}", "max_tokens": 1500}, stream=True) for i in range(2)]
    readers = [stream.iter_content(chunk_size=None) for stream in streams]  # kept: open streams
    assert all(next(reader) for reader in readers)

    def busy(rows):
        samples = scrape(api)
        return sample(samples, "inference_busy_rows", model=MODEL) == rows and \
            sample(samples, "inference_open_sessions", model=MODEL) == rows
    assert wait_for(lambda: busy(2))
    for stream in streams:
        stream.close()
    assert wait_for(lambda: busy(0))
    assert wait_for(lambda: Delta.stop(delta)("inference_generations_finished_total",
                                              model=MODEL, finish_reason="cancelled") == 2)
    samples = scrape(api)
    assert sample(samples, "inference_backend_ready", model=MODEL) == 1
    assert sample(samples, "inference_max_rows", model=MODEL) == 32
    assert sample(samples, "inference_waiting_prompts", model=MODEL) == 0
    assert sample(samples, "inference_backend_restarts_total", model=MODEL) == 0


def test_metrics_is_prometheus_text(api):
    response = requests.get(api.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE inference_time_to_first_token_seconds histogram" in response.text


def test_each_app_has_its_own_registry():
    from inference_api.config import Config
    from inference_api.http.app import create_server

    apps = [create_server(Config(mock_model=True), start_backend=False) for _ in range(2)]
    clients = [app.test_client() for app in apps]
    clients[0].get("/v1/models")
    texts = [c.get("/metrics").get_data(as_text=True) for c in clients]
    assert 'inference_requests_total{route="/v1/models",status="200"} 1.0' in texts[0]
    assert 'route="/v1/models"' not in texts[1]


def test_proxy_in_front_of_the_api_counts_the_same_traffic(api):
    with start_proxy(api.url) as proxy:
        proxy_delta, api_delta = Delta(proxy), Delta(api)
        url = f"{proxy.url}/inference/{MODEL}"
        for i in range(3):
            response = requests.post(url, json={"text": f"through {i}", "max_tokens": 3},
                                     headers=bearer(make_token()), timeout=30)
            assert response.status_code == 200 and response.text
        assert requests.post(url, json={"text": "x"}, timeout=30).status_code == 401
        assert requests.post(f"{proxy.url}/inference/gpt-17", json={"text": "x"},
                             headers=bearer(make_token()), timeout=30).status_code == 404
        proxy_delta.stop()
        api_delta.stop()
    assert proxy_delta("proxy_requests_total", status="200") == 3
    assert proxy_delta("proxy_requests_total", status="401") == 1
    assert proxy_delta("proxy_requests_total", status="404") == 1
    assert proxy_delta("proxy_auth_failures_total", reason="missing_header") == 1
    assert proxy_delta("proxy_upstream_errors_total", kind="connect") == 0
    assert sample(proxy_delta.after, "proxy_open_responses") == 0
    # The API saw what the proxy let through: three answers and the 404, not the 401.
    assert api_delta("inference_requests_total", route="/inference/<model_id>", status="200") == 3
    assert api_delta("inference_requests_total", route="/inference/<model_id>", status="404") == 1
    assert api_delta("inference_generation_tokens_total", model=MODEL) == 9
