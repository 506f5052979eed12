"""POST /tokenize and /detokenize: the served model's tokenizer over HTTP, mock and real."""
from __future__ import annotations

import pytest
import requests

from helpers import MODEL
from inference_api.serving.tokenizers import MockTokenizer


def call(server, route: str, body: dict) -> requests.Response:
    return requests.post(server.url + route, json=body, timeout=30)


def test_mock_tokenize_counts_as_the_generation_routes_do(mock_server):
    answer = call(mock_server, "/tokenize", {"model": MODEL, "prompt": "three little words"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["tokens"] == MockTokenizer().encode("three little words")
    assert body["count"] == 3 and body["max_model_len"] > 0
    usage = requests.post(mock_server.url + "/v1/completions", json={
        "model": MODEL, "prompt": "three little words", "max_tokens": 1}).json()["usage"]
    assert usage["prompt_tokens"] == body["count"]


def test_tokenize_refuses_bad_bodies_with_a_reason(mock_server):
    both = call(mock_server, "/tokenize", {"prompt": "a", "messages": [
        {"role": "user", "content": "b"}]})
    assert both.status_code == 400 and "either prompt or messages" in both.json()["message"]
    assert call(mock_server, "/tokenize", {}).status_code == 400
    other = call(mock_server, "/tokenize", {"model": "gpt-17", "prompt": "a"})
    assert other.status_code == 404 and "gpt-17" in other.json()["message"]
    assert call(mock_server, "/tokenize", {"prompt": "a", "add_special_tokens": "yes"}
                ).status_code == 400


def test_detokenize_names_an_id_outside_the_vocabulary(mock_server):
    answer = call(mock_server, "/detokenize", {"tokens": [5, 49_999]})
    assert answer.status_code == 200 and answer.json() == {"prompt": "<5> <49999>"}
    for bad in (50_000, -1):
        refused = call(mock_server, "/detokenize", {"tokens": [1, bad]})
        assert refused.status_code == 400 and str(bad) in refused.json()["message"]


@pytest.mark.slow
def test_real_tokenize_and_detokenize_round_trip(real_server, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    text = "Héllo, wörld! 你好 🙂"
    body = call(real_server, "/tokenize", {"prompt": text}).json()
    assert body["tokens"] == tokenizer(text)["input_ids"]
    assert call(real_server, "/detokenize", {"tokens": body["tokens"]}).json() == {"prompt": text}
    messages = [{"role": "user", "content": "Hi"}]
    chat = call(real_server, "/tokenize", {"messages": messages}).json()
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat["tokens"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    bare = call(real_server, "/tokenize", {"messages": messages,
                                           "add_generation_prompt": False}).json()
    assert bare["count"] < chat["count"]
    vocabulary = tokenizer.vocab_size + len(tokenizer.get_added_vocab())
    refused = call(real_server, "/detokenize", {"tokens": [vocabulary + 7]})
    assert refused.status_code == 400 and str(vocabulary + 7) in refused.json()["message"]
