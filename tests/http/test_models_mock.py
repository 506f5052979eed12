"""Several models in one server (MODELS), each on a mock backend of its own: routing by the
model field and the path, /v1/models, /health's models map, the model label of the metrics, and
one model's backend dying while another streams."""
from __future__ import annotations

import signal

import psutil
import pytest
import requests

from helpers import (api_server, bearer, client_for, make_token, sample, scrape, start_proxy,
                     wait_for)
from inference_api.mock.text import mock_answer

pytestmark = pytest.mark.processes  # servers of their own, with MODELS set
MODELS = "alpha=;max_users=4;max_seq_len=512,beta=;max_users=2,gamma="


@pytest.fixture(scope="module")
def server():
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "5", "DRAIN_TIMEOUT_S": "0",
                         "MODELS": MODELS, "LORA_MODULES": "tune=adapters/tune"})
    server.start(timeout=90)
    assert wait_for(lambda: all(m["state"] == "ready" for m in models_health(server).values()),
                    90), models_health(server)
    yield server
    server.stop()


def models_health(server) -> dict:
    return requests.get(server.url + "/health", timeout=10).json().get("models", {})


def chat(server, model: str, **extra) -> requests.Response:
    return requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}],
        **extra})


def test_models_lists_every_model_and_the_first_ones_adapters(server):
    listed = client_for(server).models.list().data
    assert [(m.id, m.parent) for m in listed] == [("alpha", None), ("tune", "alpha"),
                                                   ("beta", None), ("gamma", None)]
    assert {m.id: m.max_model_len for m in listed}["alpha"] == 512


def test_health_reports_each_model_with_its_own_rows_and_process(server):
    body = requests.get(server.url + "/health", timeout=10).json()
    assert body["status"] == "ok" and body["model"] == "alpha"
    models = body["models"]
    assert list(models) == ["alpha", "beta", "gamma"]
    assert [models[name]["max_users"] for name in models] == [4, 2, 32]
    assert body["max_users"] == 4 + 2 + 32
    assert models["alpha"]["adapters"] == ["tune"] and models["beta"]["adapters"] == []
    pids = {models[name]["pid"] for name in models}
    assert len(pids) == 3 and all(psutil.pid_exists(pid) for pid in pids)


def test_each_route_reaches_the_model_it_names(server):
    for model in ("alpha", "beta", "gamma"):
        answer = chat(server, model)
        assert answer.status_code == 200 and answer.json()["model"] == model
        completion = requests.post(server.url + "/v1/completions", timeout=60, json={
            "model": model, "prompt": "one two", "max_tokens": 4})
        assert completion.json()["choices"][0]["text"] == mock_answer("one two", 4)
        for route in ("inference", "predictions"):
            native = requests.post(f"{server.url}/{route}/{model}", timeout=60,
                                   json={"text": "one two", "max_tokens": 4})
            assert native.status_code == 200 and native.text
        messages = requests.post(server.url + "/v1/messages", timeout=60, json={
            "model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        assert messages.status_code == 200 and messages.json()["model"] == model
        responses = requests.post(server.url + "/v1/responses", timeout=60, json={
            "model": model, "input": "hi", "max_output_tokens": 2})
        assert responses.status_code == 200 and responses.json()["model"] == model
        tokens = requests.post(server.url + "/tokenize", timeout=60,
                               json={"model": model, "prompt": "a b c"})
        assert tokens.json()["count"] == 3
    # The adapter of the first model still picks itself by name.
    adapted = requests.post(server.url + "/inference/tune", timeout=60,
                            json={"text": "one two", "max_tokens": 2})
    assert adapted.text == mock_answer("one two", 2, "tune")
    # Routes without a model go to the first one: its metrics count them.
    before = scrape(server)
    for path in ("/inference", "/predictions", "/generate"):
        assert requests.post(server.url + path, json={"text": "x", "max_tokens": 2},
                             timeout=60).status_code == 200
    after = scrape(server)
    counted = {name: sample(after, "inference_generation_tokens_total", model=name)
               - sample(before, "inference_generation_tokens_total", model=name)
               for name in ("alpha", "beta", "gamma")}
    assert counted == {"alpha": 6, "beta": 0, "gamma": 0}


def test_a_tokens_models_claim_picks_among_the_models_through_the_proxy(server):
    """Behind the proxy, a token limited to one model and its adapter uses them on every route
    and gets 403 for the other models, while another token's claim allows those."""
    with start_proxy(server.url) as proxy:
        alpha_only = bearer(make_token(models=["alpha", "tune"]))
        beta_only = bearer(make_token(models=["b*"]))

        def post(route, body, headers):
            return requests.post(proxy.url + route, json=body, headers=headers, timeout=60)

        chat_of = {"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
        for model in ("alpha", "tune"):
            answer = post("/v1/chat/completions", {**chat_of, "model": model}, alpha_only)
            assert answer.status_code == 200 and answer.json()["model"] == model
        assert post("/inference/alpha", {"text": "hi", "max_tokens": 3}, alpha_only).text == \
            mock_answer("hi", 3)
        assert post("/solve/math", {"problem": "1+1", "model": "alpha", "max_new_tokens": 4},
                    alpha_only).status_code == 200
        refused = post("/v1/chat/completions", {**chat_of, "model": "beta"}, alpha_only)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
        assert post("/inference/gamma", {"text": "hi"}, alpha_only).json() == {
            "status_code": 403, "message": 'this token may not use the model "gamma"'}
        assert post("/solve/coding", {"problem": "x", "model": "beta"}, alpha_only).status_code \
            == 403
        answer = post("/v1/chat/completions", {**chat_of, "model": "beta"}, beta_only)
        assert answer.status_code == 200 and answer.json()["model"] == "beta"
        assert post("/inference/alpha", {"text": "hi"}, beta_only).status_code == 403
        listed = requests.get(proxy.url + "/v1/models", headers=alpha_only, timeout=30).json()
        assert [m["id"] for m in listed["data"]] == ["alpha", "tune", "beta", "gamma"]


def test_a_models_rows_are_its_own(server):
    # beta has two rows: two of its streams fill them and a third waits; alpha's do not wait.
    streams = [requests.post(server.url + "/inference/beta", stream=True, timeout=60,
                             json={"text": f"hold{i}", "max_tokens": 2000}) for i in range(3)]
    readers = [stream.iter_content(chunk_size=None) for stream in streams]
    assert all(next(reader) is not None for reader in readers)
    assert wait_for(lambda: (models_health(server)["beta"]["busy_rows"],
                             models_health(server)["beta"]["queued"]) == (2, 1), 30)
    assert chat(server, "alpha").status_code == 200
    assert models_health(server)["alpha"]["queued"] == 0
    for stream in streams:
        stream.close()
    assert wait_for(lambda: models_health(server)["beta"]["busy_rows"] == 0, 30)


def test_one_models_backend_dies_while_another_streams():
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "10", "DRAIN_TIMEOUT_S": "0",
                     "MODELS": "steady=;max_users=2,victim=;max_users=2"}) as server:
        assert wait_for(lambda: models_health(server).get("victim", {}).get("state") == "ready",
                        60)
        victim = psutil.Process(models_health(server)["victim"]["pid"])
        stream = requests.post(server.url + "/inference/steady", stream=True, timeout=60,
                               json={"text": "long answer", "max_tokens": 300})
        reader = stream.iter_content(chunk_size=None)
        first = next(reader)
        victim.send_signal(signal.SIGKILL)
        # Until its backend is back, the dead model's requests are refused for now, never lost
        # as a 404 or a 500; the other model's stream goes on to its end.
        seen = []

        def victim_serves() -> bool:
            response = chat(server, "victim")
            seen.append((response.status_code, response.headers.get("Retry-After")))
            return response.status_code == 200
        assert wait_for(victim_serves, 60)
        assert all(status == 200 or (status == 503 and retry) for status, retry in seen), seen
        assert (first + b"".join(reader)).decode() == mock_answer("long answer", 300)
        health = models_health(server)
        assert health["victim"]["restarts"] == 1 and health["victim"]["pid"] != victim.pid
        assert health["steady"]["restarts"] == 0
        metrics = scrape(server)
        assert sample(metrics, "inference_backend_restarts_total", model="victim") == 1
        assert sample(metrics, "inference_backend_restarts_total", model="steady") == 0


def test_a_server_whose_every_model_failed_says_so_per_model(tmp_path):
    server = api_server({"MOCK_MODEL": "0", "DRAIN_TIMEOUT_S": "0",
                         "XDG_CACHE_HOME": str(tmp_path),
                         "MODELS": f"one={tmp_path}/none.gguf,two={tmp_path}/nowhere"})
    server.start(wait_ready=False)
    try:
        assert wait_for(lambda: all(m.get("state") == "failed"
                                    for m in _health_or_empty(server).values()) and
                        len(_health_or_empty(server)) == 2, 120), server.output()
        response = requests.get(server.url + "/health", timeout=10)
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert "one:" in response.json()["message"] and "two:" in response.json()["message"]
        refused = chat(server, "two")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
    finally:
        server.stop()


def _health_or_empty(server) -> dict:
    try:
        return models_health(server)
    except (requests.RequestException, ValueError):
        return {}
