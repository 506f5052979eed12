"""POST /generate: the JSON answer, its server-sent events and its errors."""
from __future__ import annotations

import pytest
import requests

from helpers import health, post, sse_events, wait_for
from inference_api.mock.text import mock_answer


def generate(server, body, **kw) -> requests.Response:
    return requests.post(server.url + "/generate", json=body, timeout=30, **kw)


def test_answer_in_one_piece(mock_server):
    response = generate(mock_server, {"text": "red green blue", "max_tokens": 6,
                                      "num_samples": 3, "seed": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["prompt"] == "red green blue" and body["prompt_tokens"] == 3
    assert body["num_samples"] == 3
    assert body["responses"] == [{"index": i, "text": mock_answer("red green blue", 6),
                                  "finish_reason": "length", "generated_tokens": 6}
                                 for i in range(3)]
    assert body["finished"] >= body["created"] > 0
    assert body["generation_time"] == pytest.approx(body["finished"] - body["created"], abs=1e-3)


def test_other_names_of_the_fields(mock_server):
    body = generate(mock_server, {"prompt": "x y z", "max_new_tokens": 4,
                                  "num_return_sequences": 2, "do_sample": False}).json()
    assert [r["text"] for r in body["responses"]] == [mock_answer("x y z", 4)] * 2


def test_default_max_tokens_is_256(mock_server):
    body = generate(mock_server, {"text": "defaults"}).json()
    assert body["responses"][0]["generated_tokens"] == 256


def test_stream_of_events_then_the_summary(mock_server):
    response = generate(mock_server, {"text": "s t", "max_tokens": 10, "num_samples": 2,
                                      "stream": True}, stream=True)
    assert response.status_code == 200
    *parts, summary = sse_events(response)
    assert len(parts) > 2
    for index in (0, 1):
        mine = [p for p in parts if p["index"] == index]
        assert "".join(p["text"] for p in mine) == mock_answer("s t", 10)
        assert [p["finish_reason"] for p in mine][-1] == "length"
        assert all(p["finish_reason"] is None for p in mine[:-1])
        assert mine[-1]["generated_tokens"] == 10
    assert summary["num_samples"] == 2 and summary["prompt_tokens"] == 2
    assert [r["text"] for r in summary["responses"]] == [mock_answer("s t", 10)] * 2


def test_stop_strings_end_each_sample(mock_server):
    full = mock_answer("one two three", 12)
    body = generate(mock_server, {"text": "one two three", "max_tokens": 12,
                                  "stop": ["wo4 thr"]}).json()
    assert body["responses"][0]["text"] == full[:full.index("wo4 thr")]
    assert body["responses"][0]["finish_reason"] == "stop"


def test_max_input_tokens_keeps_the_end_of_a_long_prompt(mock_server):
    long_prompt = "word " * 3000
    refused = generate(mock_server, {"text": long_prompt, "max_tokens": 5})
    assert refused.status_code == 400
    assert "3000 tokens" in refused.json()["message"] and "2048" in refused.json()["message"]
    body = generate(mock_server, {"text": long_prompt, "max_tokens": 5,
                                  "max_input_tokens": 100}).json()
    assert body["prompt_tokens"] == 100
    assert body["responses"][0]["generated_tokens"] == 5


BAD = [
    ("missing text", {"max_tokens": 3}, "text is required"),
    ("blank text", {"text": "  "}, "text"),
    ("text and prompt", {"text": "a", "prompt": "b"}, "prompt is not a known field"),
    ("more samples than rows", {"text": "a", "num_samples": 33}, "33 generations"),
    ("max_tokens zero", {"text": "a", "max_tokens": 0}, "max_tokens=0"),
    ("negative eos id", {"text": "a", "eos_token_ids": [-1]}, "eos_token_ids"),
    ("stop not text", {"text": "a", "stop": [5]}, "stop"),
    ("max_input_tokens zero", {"text": "a", "max_input_tokens": 0}, "max_input_tokens=0"),
    ("unknown field", {"text": "a", "beam_width": 4}, "beam_width is not a known field"),
]


@pytest.mark.parametrize("name,body,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_400_in_the_native_shape(mock_server, name, body, expected):
    response = generate(mock_server, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["status_code"] == 400 and expected in payload["message"], payload


def test_disconnected_stream_frees_the_rows(mock_server):
    response = generate(mock_server, {"text": "long one", "max_tokens": 1500, "num_samples": 3,
                                      "stream": True}, stream=True)
    assert next(line for line in response.iter_lines() if line).startswith(b"data: {")
    response.close()
    assert wait_for(lambda: health(mock_server)["busy_rows"] == 0
                    and health(mock_server)["sessions"] == 0)


@pytest.mark.slow
def test_greedy_generate_equals_the_native_stream_on_the_real_model(real_server):
    prompt = "The largest planet in the solar system is"
    native = post(real_server, {"text": prompt, "max_tokens": 20, "temperature": 0}).text
    body = generate(real_server, {"text": prompt, "max_new_tokens": 20, "do_sample": False,
                                  "num_samples": 2, "temperature": 0.9}).json()
    assert [r["text"] for r in body["responses"]] == [native, native] and native
    seeded = {"text": prompt, "max_tokens": 20, "seed": 77, "num_samples": 2}
    first = generate(real_server, seeded).json()["responses"]
    assert generate(real_server, seeded).json()["responses"] == first
