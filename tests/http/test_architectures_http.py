"""Each architecture behind the real server: a tiny random model saved to a folder, served by
gunicorn and its backend with MODEL_PATH set to the folder, answers concurrent completions with
transformers' 64 greedy tokens and their log probabilities within 1e-4."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import api_server, health
from tiny_architectures import ARCHITECTURES, TOKENS, decode, encode, save, transformers_answers

pytestmark = pytest.mark.processes

PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi", "x = [1, 2, 3]; print(sum(x))"]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_server_answers_as_transformers(name, tmp_path):
    hf_model = save(name, tmp_path / name)
    server = api_server({"MODEL_PATH": str(tmp_path / name), "DTYPE": "float32",
                         "MAX_USERS": "4", "MAX_SEQ_LEN": "128", "PREFILL_CHUNK": "8",
                         "XDG_CACHE_HOME": str(tmp_path / "cache"), "DRAIN_TIMEOUT_S": "0"})
    server.start(timeout=300)
    try:
        model_id = health(server)["model"]

        def complete(prompt: str) -> dict:
            response = requests.post(f"{server.url}/v1/completions", timeout=300, json={
                "model": model_id, "prompt": encode(prompt), "max_tokens": TOKENS,
                "temperature": 0, "ignore_eos": True, "logprobs": 0})
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]

        with ThreadPoolExecutor(len(PROMPTS)) as pool:  # rows of different lengths, one step
            choices = list(pool.map(complete, PROMPTS))
        for prompt, choice in zip(PROMPTS, choices):
            tokens, logprobs, _ = transformers_answers(hf_model, encode(prompt))
            assert choice["text"] == decode(tokens), prompt  # one character per token
            assert choice["logprobs"]["token_logprobs"] == pytest.approx(logprobs, abs=1e-4)
    finally:
        server.stop()
