"""Several real models in one server: the bundled model under two names and a tiny random-weight
model, each with its own backend. Each answers on every route, the two bundled names answer a
greedy prompt alike, and one killed backend leaves the others serving while it restarts."""
from __future__ import annotations

import json
import signal

import psutil
import pytest
import requests

from helpers import api_server, wait_for
from tiny_architectures import save

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # converts the GGUF file first
NAMES = ("smol-a", "smol-b", "tiny")
# A chat template in the tiny tokenizer's alphabet (printable ASCII, no newlines).
TINY_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} | {% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    save("llama", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config,
                                                              "chat_template": TINY_TEMPLATE}))
    models = (f"smol-a=;max_users=4;max_seq_len=512,smol-b=;max_users=4;max_seq_len=512,"
              f"tiny={folder};max_users=2;max_seq_len=128")
    # A cache of its own: both bundled backends convert the same GGUF file at the same time.
    server = api_server({"MOCK_MODEL": "0", "MODELS": models, "DRAIN_TIMEOUT_S": "0",
                         "BACKEND_START_TIMEOUT_S": "900",
                         "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))})
    server.start(timeout=900)
    try:
        assert wait_for(lambda: all(states(server).get(name) == "ready" for name in NAMES),
                        900), server.output()
        yield server
    finally:
        server.stop()


def states(server) -> dict:
    models = requests.get(server.url + "/health", timeout=10).json().get("models", {})
    return {name: model["state"] for name, model in models.items()}


def complete(server, model: str, prompt: str, tokens: int = 12) -> str:
    response = requests.post(server.url + "/v1/completions", timeout=300, json={
        "model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
        "ignore_eos": True})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def chat(server, model: str) -> requests.Response:
    return requests.post(server.url + "/v1/chat/completions", timeout=300, json={
        "model": model, "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello"}]})


def test_every_model_is_listed_and_reported(server):
    listed = requests.get(server.url + "/v1/models", timeout=30).json()["data"]
    assert [card["id"] for card in listed] == list(NAMES)
    assert [card["max_model_len"] for card in listed] == [512, 512, 128]
    health = requests.get(server.url + "/health", timeout=30).json()
    assert health["status"] == "ok" and list(health["models"]) == list(NAMES)
    pids = [health["models"][name]["pid"] for name in NAMES]
    assert len(set(pids)) == 3 and all(psutil.pid_exists(pid) for pid in pids)


def test_every_model_answers_on_every_route(server):
    for model in NAMES:
        answer = chat(server, model)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == model and answer.json()["usage"]["completion_tokens"]
        assert complete(server, model, "Once upon a time")
        native = requests.post(f"{server.url}/inference/{model}", timeout=300,
                               json={"text": "Once upon a time", "max_tokens": 6,
                                     "temperature": 0, "ignore_eos": True})
        assert native.status_code == 200 and native.text


def test_the_same_model_under_two_names_answers_alike(server):
    for prompt in ("The capital of France is", "def fibonacci(n):"):
        assert complete(server, "smol-a", prompt, 16) == complete(server, "smol-b", prompt, 16)
    # The tiny random model is another model: its answer is not the bundled one's.
    assert complete(server, "tiny", "Hello there") != complete(server, "smol-a", "Hello there")


def test_a_killed_backend_restarts_while_another_model_streams(server):
    pid = requests.get(server.url + "/health", timeout=30).json()["models"]["smol-b"]["pid"]
    stream = requests.post(server.url + "/v1/completions", stream=True, timeout=300, json={
        "model": "smol-a", "prompt": "Tell me a long story.", "max_tokens": 120,
        "temperature": 0, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True}})
    lines = stream.iter_lines()
    assert next(line for line in lines if line).startswith(b"data: ")
    psutil.Process(pid).send_signal(signal.SIGKILL)

    def refused() -> bool:
        response = chat(server, "smol-b")
        return response.status_code == 503 and bool(response.headers.get("Retry-After")) and \
            response.json()["error"]["type"] == "server_error"
    assert wait_for(refused, 60)
    assert states(server)["smol-a"] == "ready" and states(server)["tiny"] == "ready"
    assert chat(server, "tiny").status_code == 200
    events = [json.loads(line[6:]) for line in lines
              if line.startswith(b"data: ") and line != b"data: [DONE]"]
    assert all("error" not in event for event in events), events[-1]
    assert events[-1]["usage"]["completion_tokens"] == 120
    assert wait_for(lambda: chat(server, "smol-b").status_code == 200, 600), server.output()
    health = requests.get(server.url + "/health", timeout=30).json()["models"]
    assert health["smol-b"]["restarts"] == 1 and health["smol-b"]["pid"] != pid
    assert health["smol-a"]["restarts"] == 0
