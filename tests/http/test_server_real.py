"""The HTTP server on the real default model, through a real gunicorn process."""
from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import BAD_REQUESTS, api_server, backend_process, health, post, post_body, wait_for

pytestmark = pytest.mark.slow


def greedy_text(server, prompt: str, n: int, route: str = "inference") -> str:
    response = post(server, {"text": prompt, "max_tokens": n, "temperature": 0}, route=route,
                    stream=True)
    assert response.status_code == 200
    return b"".join(response.iter_content(chunk_size=None)).decode()


def test_streamed_greedy_answer_equals_the_backend_answer(real_server):
    from inference_api.config import Config
    from inference_api.engine.core import Engine
    from inference_api.model.runner import ModelRunner
    from inference_api.sampling_params import SamplingParams
    from inference_api.process_messages import Submit
    from inference_api.engine.step_budget import FixedBudget
    from inference_api.engine.text_state import TextMaker

    prompts = ["The capital of France is", "Water is made of", "My favourite food is"]
    streamed = [greedy_text(real_server, p, 16) for p in prompts]
    # The same backend in this process, in the server's dtype, each prompt alone as the server
    # ran them: in bfloat16 a prompt's tokens may depend on what shares its steps (matrix
    # products over more tokens round differently).
    runner = ModelRunner(Config(max_users=4, max_seq_len=1024))
    texts = []
    for prompt in prompts:
        engine = Engine(runner, TextMaker.for_tokenizer(runner.tokenizer, runner.eos_ids), 4,
                        FixedBudget(128), runner.max_seq_len)
        ids = runner.tokenizer.encode(prompt).ids
        engine.add(Submit("alone", ids, SamplingParams(max_tokens=16, temperature=0)))
        texts.append("")
        while engine.has_work():
            texts[-1] += "".join(out.text for out in engine.step())
    assert streamed == texts
    assert all(streamed)


def test_predictions_answers_as_the_assistant(real_server):
    text = greedy_text(real_server, "What is the capital of France?", 24, route="predictions")
    assert "Paris" in text


def test_forty_concurrent_streams_all_complete(real_server):
    def one(i):
        response = post(real_server, {"text": f"Tell me fact number {i} about cats.",
                                      "max_tokens": 12, "temperature": 0}, stream=True,
                        route="predictions", timeout=(10, 600))  # queued behind 32 rows
        body = b"".join(response.iter_content(chunk_size=None)).decode()
        return response.status_code, body

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    assert [status for status, _ in results] == [200] * 40, results
    assert all(body for _, body in results), results
    assert wait_for(lambda: health(real_server)["busy_rows"] == 0, 60)


def test_disconnect_frees_rows(real_server):
    responses = [post(real_server, {"text": f"Write a very long essay number {i}.",
                                    "max_tokens": 900, "ignore_eos": True}, stream=True)
                 for i in range(8)]
    readers = [response.iter_content(chunk_size=None) for response in responses]
    for reader in readers:
        next(reader)
    assert wait_for(lambda: health(real_server)["busy_rows"] == 8, 30)
    for response in responses:
        response.close()
    assert wait_for(lambda: health(real_server)["busy_rows"] == 0
                    and health(real_server)["sessions"] == 0, 30)


@pytest.mark.parametrize("name,body,expected", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_400_on_the_real_model(real_server, name, body, expected):
    response = post_body(real_server, body)
    assert response.status_code == 400, response.text
    if name == "prompt too long":
        expected = "context of 1024 tokens"
    assert expected in response.json()["message"]


def test_backend_killed_mid_stream_then_recovery():
    with api_server({"MOCK_MODEL": "0", "MAX_SEQ_LEN": "512", "MAX_USERS": "4"}) as server:
        server.wait_healthy(600)
        old = backend_process(server)
        response = post(server, {"text": "Count from one to one thousand:", "max_tokens": 400,
                                 "ignore_eos": True},
                        stream=True)
        reader = response.iter_content(chunk_size=None)
        next(reader)
        old.send_signal(signal.SIGKILL)
        # Ends early instead of hanging, and cut: no client can take it for a whole answer.
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(reader)
        assert wait_for(lambda: requests.get(server.url + "/health").status_code == 503, 10)
        assert wait_for(lambda: requests.get(server.url + "/health").status_code == 200, 300)
        assert backend_process(server).pid != old.pid
        assert greedy_text(server, "The capital of France is", 4)


def test_generate_refuses_eos_ids_outside_the_vocabulary(real_server):
    response = requests.post(real_server.url + "/generate",
                             json={"text": "Hi", "max_tokens": 3, "eos_token_ids": [10**7]})
    assert response.status_code == 400
    assert "eos_token_ids" in response.json()["message"]
