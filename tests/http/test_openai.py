"""The OpenAI-compatible routes through the official openai client, on the mock and real model."""
from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from helpers import (MODEL, api_server, backend_process, chat_prompt, client_for, health, post,
                     wait_for)
from inference_api.mock.text import mock_answer


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17")


def test_completion_in_one_piece(client):
    result = client.completions.create(model=MODEL, prompt="alpha beta gamma", max_tokens=7,
                                       user="someone", logprobs=None)
    assert result.id.startswith("cmpl-") and result.object == "text_completion"
    assert result.model == MODEL and result.created > 0
    [choice] = result.choices
    assert choice.text == mock_answer("alpha beta gamma", 7)
    assert choice.finish_reason == "length" and choice.index == 0
    assert (result.usage.prompt_tokens, result.usage.completion_tokens,
            result.usage.total_tokens) == (3, 7, 10)


def test_completion_default_max_tokens_is_16(client):
    result = client.completions.create(model=MODEL, prompt="short")
    assert result.choices[0].text == mock_answer("short", 16)


def test_completion_stream_comes_in_chunks(client):
    # A second of generation on the mock: even a client slowed by a loaded machine gets it in
    # several pieces (a slow client's pieces merge, so few tokens could come as one).
    chunks = list(client.completions.create(model=MODEL, prompt="one two", max_tokens=100,
                                            stream=True))
    assert len(chunks) > 2  # streamed as made, not one answer at the end
    assert "".join(c.choices[0].text for c in chunks) == mock_answer("one two", 100)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")


def test_chat_uses_the_template_with_every_turn(client):
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "and"},
                                             {"type": "text", "text": "now?"}]}]
    result = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=9)
    expected_prompt = chat_prompt(messages[:3] + [{"role": "user", "content": "and\nnow?"}])
    assert result.id.startswith("chatcmpl-") and result.object == "chat.completion"
    [choice] = result.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == mock_answer(expected_prompt, 9)
    assert choice.finish_reason == "length"
    assert result.usage.prompt_tokens == len(expected_prompt.split())
    assert result.usage.completion_tokens == 9


def test_token_id_prompts_are_taken_as_they_are(client):
    ids = [5, 6, 7]
    result = client.completions.create(model=MODEL, prompt=ids, max_tokens=4)
    assert result.usage.prompt_tokens == 3
    assert result.choices[0].text == mock_answer("<5> <6> <7>", 4)
    batch = client.completions.create(model=MODEL, prompt=[ids, [9]], max_tokens=2)
    assert [c.index for c in batch.choices] == [0, 1] and batch.usage.prompt_tokens == 4
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[[1], [2, 123_456]], max_tokens=2)
    assert "123456" in caught.value.body["message"] and caught.value.body["param"] == "prompt"


def test_answers_carry_a_fingerprint_and_chat_messages_a_null_refusal(client):
    chat = client.chat.completions.create(model=MODEL, max_tokens=3,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.refusal is None
    assert chat.model_dump()["choices"][0]["message"]["refusal"] is None  # sent, as null
    fingerprint = chat.system_fingerprint
    assert fingerprint.startswith("fp_") and len(fingerprint) == 13
    completion = client.completions.create(model=MODEL, prompt="a b", max_tokens=2, seed=2**63 - 1)
    assert completion.system_fingerprint == fingerprint  # the same model, the same way
    chunks = list(client.completions.create(model=MODEL, prompt="a b", max_tokens=2, stream=True,
                                            seed=-(2**63)))
    assert {chunk.system_fingerprint for chunk in chunks} == {fingerprint}


def test_chat_stream_with_usage(client):
    messages = [{"role": "user", "content": "stream me"}]
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=messages, max_completion_tokens=10, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == \
        mock_answer(chat_prompt(messages), 10)
    assert all(c.usage is None for c in text_chunks)
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == 10
    assert usage_chunk.usage.prompt_tokens == len(chat_prompt(messages).split())


def test_n_samples_each_get_a_choice(client):
    result = client.completions.create(model=MODEL, prompt="many of us", max_tokens=5, n=3,
                                       seed=11)
    assert sorted(c.index for c in result.choices) == [0, 1, 2]
    assert all(c.text == mock_answer("many of us", 5) for c in result.choices)
    assert result.usage.completion_tokens == 15 and result.usage.prompt_tokens == 3


def test_n_samples_stream_interleaved_and_complete(client):
    stream = client.chat.completions.create(model=MODEL, n=4, max_tokens=20, stream=True,
                                            messages=[{"role": "user", "content": "x y"}])
    texts, finishes = {}, {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    expected = mock_answer(chat_prompt([{"role": "user", "content": "x y"}]), 20)
    assert texts == {i: expected for i in range(4)}
    assert finishes == {i: "length" for i in range(4)}


def test_batch_of_prompts(client):
    result = client.completions.create(model=MODEL, prompt=["first one", "second"], max_tokens=3,
                                       n=2)
    texts = [c.text for c in sorted(result.choices, key=lambda c: c.index)]
    assert texts == [mock_answer("first one", 3)] * 2 + [mock_answer("second", 3)] * 2


def test_stop_strings_end_the_answer(client):
    full = mock_answer("one two three", 12)
    result = client.completions.create(model=MODEL, prompt="one two three", max_tokens=12,
                                       stop=["wo4 thr", "never"])
    assert result.choices[0].text == full[:full.index("wo4 thr")]
    assert result.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model=MODEL, max_tokens=12, stop="three3",
                                            stream=True, messages=[{"role": "user",
                                                                    "content": "one two three"}])
    full = mock_answer(chat_prompt([{"role": "user", "content": "one two three"}]), 12)
    chunks = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full[:full.index("three3")]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_extensions_and_harmless_fields_are_accepted(client):
    result = client.completions.create(
        model=MODEL, prompt="a b", max_tokens=6, temperature=0.7, top_p=0.9, seed=3,
        presence_penalty=0.5, frequency_penalty=0.5, logprobs=None, user="u-1",
        extra_body={"top_k": 20, "repetition_penalty": 1.1, "ignore_eos": True, "min_tokens": 2,
                    "echo": False, "logit_bias": None})
    assert result.choices[0].text == mock_answer("a b", 6)
    chat = client.chat.completions.create(model=MODEL, max_tokens=2, logprobs=False,
                                          messages=[{"role": "developer", "content": "d"},
                                                    {"role": "user", "content": "u"}])
    assert chat.choices[0].message.content == mock_answer(
        chat_prompt([{"role": "system", "content": "d"}, {"role": "user", "content": "u"}]), 2)


UNSUPPORTED = [
    ("suffix", dict(suffix="end")),
    ("best_of", dict(best_of=3)),
]


@pytest.mark.parametrize("param,kwargs", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_parameter_is_refused_by_name(client, param, kwargs):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="a", max_tokens=2, **kwargs)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_parameter"


def test_chat_parts_other_than_text_are_refused(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{
            "role": "user", "content": [{"type": "image_url",
                                         "image_url": {"url": "http://x/y.png"}}]}])
    assert "image_url" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, max_tokens=2,
                                       messages=[{"role": "tool", "content": "x"}])
    assert caught.value.body["param"].startswith("messages.0")
    assert "tool_call_id" in caught.value.body["message"]


BAD_VALUES = [
    ("temperature", dict(temperature=2.5)),
    ("top_p", dict(top_p=0)),
    ("n", dict(n=33)),  # more choices than the server has rows
    ("max_tokens", dict(max_tokens=0)),
    ("presence_penalty", dict(presence_penalty=3)),
    ("stop", dict(stop=[""])),
    ("prompt", dict(prompt=[1.5, 2])),  # ids are integers
    ("prompt", dict(prompt=[[1, 2], [True]])),
    ("prompt", dict(prompt=[7, 50_000])),  # the mock's vocabulary is 0..49999
    ("seed", dict(seed=2**63)),  # beyond a signed 64-bit integer, as vLLM refuses it
    ("seed", dict(seed=-(2**63) - 1)),
    ("stream_options", dict(stream_options={"include_usage": True})),  # without stream
]


@pytest.mark.parametrize("param,kwargs", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_raise_bad_request_naming_the_parameter(client, param, kwargs):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**{"model": MODEL, "prompt": "a", "max_tokens": 2, **kwargs})
    assert caught.value.body["param"].split(".")[0] == param
    assert param in caught.value.body["message"]


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "a"}])
    assert caught.value.body["code"] == "model_not_found" and MODEL in caught.value.body["message"]


def test_prompt_too_long_names_both_counts(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="word " * 2040, max_tokens=10)
    message = caught.value.body["message"]
    assert "2040 tokens" in message and "2048" in message
    assert caught.value.body["code"] == "context_length_exceeded"


def test_errors_outside_the_client_keep_openai_shape(mock_server):
    url = mock_server.url + "/v1/completions"
    response = requests.post(url, data=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]["message"]
    response = requests.get(mock_server.url + "/v1/no/such/thing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"
    response = requests.post(url, data=b'{"prompt": "' + b"x" * (2 << 20) + b'"}',
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "bytes" in response.json()["error"]["message"]
    response = requests.post(url, json={"prompt": "a"})
    assert response.status_code == 400 and response.json()["error"]["message"] == \
        "model is required"


def test_disconnected_streams_free_every_row(mock_server):
    for n in (1, 3):
        response = requests.post(mock_server.url + "/v1/completions", stream=True, timeout=30,
                                 json={"model": MODEL, "prompt": "hold on", "n": n,
                                       "max_tokens": 1500, "stream": True})
        lines = response.iter_lines()
        assert next(line for line in lines if line).startswith(b"data: {")
        response.close()
    assert wait_for(lambda: health(mock_server)["busy_rows"] == 0
                    and health(mock_server)["sessions"] == 0)


@pytest.mark.processes
def test_overloaded_is_503_with_retry_after_and_releases_all_samples():
    with api_server({"MOCK_MODEL": "1", "MAX_USERS": "2", "MAX_QUEUE": "0"}) as server:
        client = client_for(server)
        holder = client.completions.create(model=MODEL, prompt="hold", max_tokens=1000,
                                           stream=True)
        next(iter(holder))  # one row is busy: two more samples cannot both have one
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model=MODEL, prompt="a b", max_tokens=3, n=2)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["Retry-After"] == "1"
        assert caught.value.body["code"] == "overloaded"
        # The first sample's session was given back: one sample fits beside the stream.
        assert client.completions.create(model=MODEL, prompt="a b", max_tokens=3,
                                         n=1).choices[0].text == mock_answer("a b", 3)
        holder.close()


@pytest.mark.processes
def test_backend_dying_mid_stream_raises_in_the_client():
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "10"}) as server:
        stream = client_for(server).chat.completions.create(
            model=MODEL, max_tokens=1000, stream=True,
            messages=[{"role": "user", "content": "doomed"}])
        next(stream)
        backend_process(server).send_signal(signal.SIGKILL)
        with pytest.raises(openai.APIError) as caught:
            for _ in stream:
                pass
        assert "generation was interrupted" in str(caught.value)
        assert caught.value.code == "unavailable"


@pytest.mark.processes
def test_answers_caught_by_a_backend_death_are_503_with_retry_after():
    """A whole answer cut by the backend's death is the server's trouble, not the request's:
    a 503 that tells the client when to send it again, never a 500."""
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "10"}) as server:
        requests_ = [("/v1/completions", {"model": MODEL, "prompt": "doomed", "max_tokens": 1000}),
                     ("/generate", {"text": "doomed", "max_tokens": 1000, "num_samples": 2})]
        with ThreadPoolExecutor(len(requests_)) as pool:
            answers = [pool.submit(requests.post, server.url + path, json=body, timeout=60)
                       for path, body in requests_]
            assert wait_for(lambda: health(server)["busy_rows"] == 3)
            backend_process(server).send_signal(signal.SIGKILL)
            answers = [answer.result() for answer in answers]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert "interrupted" in answer.text
        assert answers[0].json()["error"]["code"] == "unavailable"
        # Sent again once the backend is back, the same request succeeds.
        assert wait_for(lambda: requests.get(server.url + "/health").status_code == 200, 60)
        again = requests.post(server.url + "/v1/completions", timeout=60,
                              json={"model": MODEL, "prompt": "a b", "max_tokens": 3})
        assert again.json()["choices"][0]["text"] == mock_answer("a b", 3)


# --- the real model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_native_and_openai_stream_the_same_greedy_answer(real_server):
    client = client_for(real_server)
    prompt = "The three primary colours are"
    native = post(real_server, {"text": prompt, "max_tokens": 24, "temperature": 0},
                  stream=True)
    native_text = b"".join(native.iter_content(chunk_size=None)).decode()
    chunks = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24,
                                       temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == native_text and native_text
    question = "What is the capital of France?"
    native = post(real_server, {"text": question, "max_tokens": 24, "temperature": 0},
                  route="predictions", stream=True)
    native_text = b"".join(native.iter_content(chunk_size=None)).decode()
    chunks = client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0,
                                            stream=True,
                                            messages=[{"role": "user", "content": question}])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == native_text
    assert "Paris" in native_text


@pytest.mark.slow
def test_seeds_on_the_real_model(real_server):
    client = client_for(real_server)

    def sample(seed, n=1):
        result = client.completions.create(model=MODEL, prompt="Once upon a time", n=n,
                                           max_tokens=24, temperature=1.0, seed=seed)
        return [c.text for c in sorted(result.choices, key=lambda c: c.index)]

    first = sample(1234, n=3)
    assert sample(1234, n=3) == first  # same seed, same texts
    assert len(set(first)) == 3  # sample i uses seed + i: the samples differ
    assert sample(99, n=1) == sample(99, n=1)


@pytest.mark.slow
def test_real_chat_ends_with_eos_as_stop(real_server):
    result = client_for(real_server).chat.completions.create(
        model=MODEL, max_tokens=200, temperature=0,
        messages=[{"role": "system", "content": "Answer with one word."},
                  {"role": "user", "content": "What colour is the sky on a clear day?"}])
    choice = result.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content.strip()
    assert result.usage.completion_tokens < 200
