"""LoRA adapters' names on every route, on a mock server with LORA_MODULES set (the mock serves
the names without reading the files and marks each answer with the adapter it reached)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from helpers import MODEL, api_server, client_for, post
from inference_api.mock.text import mock_answer

pytestmark = pytest.mark.processes
ADAPTERS = ["tune1", "tune2"]


@pytest.fixture(scope="module")
def server():
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "5", "DRAIN_TIMEOUT_S": "0",
                         "LORA_MODULES": "tune1=adapters/one, tune2=adapters/two"})
    server.start(timeout=60)
    yield server
    server.stop()


def test_models_lists_the_adapters_with_the_base_model_as_their_parent(server):
    client = client_for(server)
    listed = client.models.list().data
    assert [(m.id, m.parent) for m in listed] == [(MODEL, None), ("tune1", MODEL),
                                                   ("tune2", MODEL)]
    assert client.models.retrieve("tune2").parent == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("tune3")


def test_the_model_name_picks_the_adapter_in_one_request_beside_others(server):
    client = client_for(server)

    def complete(model: str) -> tuple[str, str]:
        result = client.completions.create(model=model, prompt="alpha beta gamma", max_tokens=6)
        return result.model, result.choices[0].text

    models = [MODEL, *ADAPTERS] * 3
    with ThreadPoolExecutor(len(models)) as pool:  # base and adapter rows in the same steps
        answers = list(pool.map(complete, models))
    for model, (named, text) in zip(models, answers):
        adapter = None if model == MODEL else model
        assert (named, text) == (model, mock_answer("alpha beta gamma", 6, adapter))
    chat = client.chat.completions.create(model="tune1", max_tokens=3,
                                          messages=[{"role": "user", "content": "hi there"}])
    assert chat.model == "tune1" and chat.choices[0].message.content.startswith("tune1:")


def test_native_routes_take_the_adapter_in_the_path(server):
    for route in ("inference", "predictions"):
        response = post(server, {"text": "alpha beta", "max_tokens": 4}, route=route,
                        model="tune2")
        assert response.status_code == 200
        words = response.text.split()
        assert len(words) == 4 and all(w.startswith("tune2:") for w in words)
    assert post(server, {"text": "alpha beta", "max_tokens": 4}).text == mock_answer(
        "alpha beta", 4)


def test_an_unknown_model_is_the_same_404_as_before_and_lists_the_adapters(server):
    response = post(server, {"text": "alpha", "max_tokens": 4}, model="tune3")
    assert response.status_code == 404
    assert response.json()["message"] == ("model 'tune3' is not served here; the served models "
                                          f"are '{MODEL}', 'tune1', 'tune2'")
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(server).completions.create(model="tune3", prompt="alpha", max_tokens=2)
    assert caught.value.body["code"] == "model_not_found"
    tokenized = requests.post(server.url + "/tokenize", json={"model": "tune1", "prompt": "a b"},
                              timeout=30)
    assert tokenized.status_code == 200 and tokenized.json()["count"] == 2
    assert requests.post(server.url + "/tokenize", json={"model": "tune3", "prompt": "a b"},
                         timeout=30).status_code == 404


def test_openapi_names_the_adapters_as_models(server):
    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    schema = document["components"]["schemas"]["CompletionRequest"]["properties"]["model"]
    assert schema["enum"] == [MODEL, *ADAPTERS]


def test_the_responses_and_messages_apis_take_adapter_names(server):
    ask = [{"role": "user", "content": "hi there"}]
    response = requests.post(f"{server.url}/v1/responses", timeout=30, json={
        "model": "tune2", "input": "hi there", "max_output_tokens": 3}).json()
    assert response["model"] == "tune2"
    assert response["output"][0]["content"][0]["text"].startswith("tune2:")
    message = requests.post(f"{server.url}/v1/messages", timeout=30, json={
        "model": "tune1", "messages": ask, "max_tokens": 3}).json()
    assert message["model"] == "tune1" and message["content"][0]["text"].startswith("tune1:")
    base = requests.post(f"{server.url}/v1/messages", timeout=30, json={
        "model": MODEL, "messages": ask, "max_tokens": 3}).json()
    assert not base["content"][0]["text"].startswith(("tune1:", "tune2:"))
    for route, body in (("responses", {"input": "hi"}), ("messages", {"messages": ask,
                                                                       "max_tokens": 3})):
        missing = requests.post(f"{server.url}/v1/{route}", timeout=30,
                                json={"model": "tune3", **body})
        assert missing.status_code == 404 and "tune2" in missing.text
