"""Log probabilities, echo, logit_bias, lenient fields and the choices limit on the OpenAI routes."""
from __future__ import annotations

import openai
import pytest
import requests

from helpers import MODEL, api_server, chat_prompt, client_for
from inference_api.mock.text import mock_word


def mock_logprob(index: int) -> float:
    """The log probability the mock gives its token number `index`."""
    return -0.25 * (1 + index % 3)


def test_completion_logprobs_in_the_legacy_shape(client):
    prompt = "alpha beta"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, logprobs=2)
    [choice] = result.choices
    lp = choice.logprobs
    assert lp.tokens == [mock_word(prompt, i) for i in range(5)]
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs == [mock_logprob(i) for i in range(5)]
    assert [list(top) for top in lp.top_logprobs] == [
        [mock_word(prompt, i), mock_word(prompt, i + 1)] for i in range(5)]
    assert all(choice.text[o:].startswith(t) for o, t in zip(lp.text_offset, lp.tokens))


def test_completion_logprobs_zero_gives_each_sampled_tokens_own_entry(client):
    """As vLLM answers it: no alternatives, but the chosen token with its log probability."""
    lp = client.completions.create(model=MODEL, prompt="x", max_tokens=3, logprobs=0).choices[
        0].logprobs
    assert lp.tokens == [mock_word("x", i) for i in range(3)]
    assert lp.top_logprobs == [{mock_word("x", i): mock_logprob(i)} for i in range(3)]


def test_echo_returns_the_prompt_first(client):
    result = client.completions.create(model=MODEL, prompt="one two", max_tokens=2, echo=True)
    assert result.choices[0].text == "one two" + mock_word("one two", 0) + mock_word("one two", 1)


def test_echo_with_logprobs_and_no_new_tokens_scores_the_prompt(client):
    result = client.completions.create(model=MODEL, prompt="one two three", max_tokens=0,
                                       echo=True, logprobs=1)
    [choice] = result.choices
    assert choice.text == "one two three"
    lp = choice.logprobs
    # The mock's prompt tokens are its words; the first has no log probability.
    assert len(lp.tokens) == 3
    assert lp.token_logprobs == [None, -1.0, -1.0]
    assert lp.top_logprobs[0] is None and all(len(t) == 1 for t in lp.top_logprobs[1:])
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert result.usage.completion_tokens == 0 and choice.finish_reason == "length"


def test_echo_logprobs_stream_start_with_the_prompt(client):
    chunks = list(client.completions.create(model=MODEL, prompt="p q", max_tokens=3, echo=True,
                                            logprobs=0, stream=True))
    tokens = [t for c in chunks for choice in c.choices if choice.logprobs
              for t in choice.logprobs.token_logprobs]
    assert tokens[0] is None and tokens[1] == -1.0
    assert tokens[2:] == [mock_logprob(i) for i in range(3)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "p q" + "".join(
        mock_word("p q", i) for i in range(3))


def test_max_tokens_zero_needs_echo_and_logprobs(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="a", max_tokens=0, echo=True)
    assert caught.value.body["param"] == "max_tokens"


def test_chat_logprobs_whole_and_streamed_agree(client):
    messages = [{"role": "user", "content": "hello there"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4,
                                           logprobs=True, top_logprobs=3)
    content = whole.choices[0].logprobs.content
    text = chat_prompt(messages)
    assert [c.token for c in content] == [mock_word(text, i) for i in range(4)]
    assert [c.logprob for c in content] == [mock_logprob(i) for i in range(4)]
    assert all(len(c.top_logprobs) == 3 and c.top_logprobs[0].token == c.token for c in content)
    assert all(bytes(c.bytes).decode() == c.token for c in content)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4,
                                                 logprobs=True, top_logprobs=3, stream=True))
    streamed = [c for chunk in chunks for choice in chunk.choices if choice.logprobs
                for c in choice.logprobs.content]
    assert [(c.token, c.logprob) for c in streamed] == [(c.token, c.logprob) for c in content]


def test_chat_without_logprobs_has_null_logprobs(client):
    result = client.chat.completions.create(model=MODEL, max_tokens=2,
                                            messages=[{"role": "user", "content": "a"}])
    assert result.choices[0].logprobs is None


@pytest.mark.parametrize("kwargs,param", [
    (dict(top_logprobs=2), "top_logprobs"),  # without logprobs
    (dict(logprobs=True, top_logprobs=21), "top_logprobs"),
    (dict(logit_bias={"x": 1}), "logit_bias"),
    (dict(logit_bias={"5": 101}), "logit_bias"),
    (dict(logit_bias={"50000": 5}), "logit_bias"),  # outside the mock's vocabulary
])
def test_bad_logprob_and_bias_values_are_400s(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, max_tokens=2,
                                       messages=[{"role": "user", "content": "a"}], **kwargs)
    assert caught.value.body["param"] == param or param in caught.value.body["message"]


def test_completion_logprobs_over_five_is_refused(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="a", max_tokens=2, logprobs=6)
    assert caught.value.body["param"] == "logprobs"


def test_unknown_fields_are_ignored_and_named(mock_server):
    response = requests.post(mock_server.url + "/v1/completions", timeout=30, json={
        "model": MODEL, "prompt": "a b", "max_tokens": 2, "frobnicate": 1,
        "guided_whatever": {"x": 1}})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == mock_word("a b", 0) + mock_word("a b", 1)
    assert response.headers["X-Ignored-Fields"] == '["frobnicate", "guided_whatever"]'
    plain = requests.post(mock_server.url + "/v1/completions", timeout=30, json={
        "model": MODEL, "prompt": "a b", "max_tokens": 2})
    assert "X-Ignored-Fields" not in plain.headers


def test_known_but_unsupported_fields_are_still_refused(client):
    for kwargs in (dict(suffix="end"), dict(best_of=3)):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=MODEL, prompt="a", max_tokens=2, **kwargs)
        assert caught.value.body["code"] == "unsupported_parameter"


def test_choices_are_limited_by_the_rows_of_the_server(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=1, n=17)
    assert caught.value.body["param"] == "n" and "32" in caught.value.body["message"]
    result = client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=1, n=16)
    assert len(result.choices) == 32


@pytest.mark.processes
def test_strict_fields_refuses_unknown_fields_and_fewer_rows_fewer_choices():
    server = api_server({"MOCK_MODEL": "1", "STRICT_FIELDS": "1", "MAX_USERS": "4"})
    server.start()
    try:
        client = client_for(server)
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=MODEL, prompt="a", max_tokens=1,
                                      extra_body={"frobnicate": 1})
        assert caught.value.body["param"] == "frobnicate"
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=MODEL, prompt="a", max_tokens=1, n=5)
        assert len(client.completions.create(model=MODEL, prompt="a", max_tokens=1,
                                             n=4).choices) == 4
    finally:
        server.stop()

