"""Anthropic's Messages API through the official anthropic client and the JWT proxy (the token
in x-api-key, as Anthropic's clients send it): on the mock, then on the real model."""
from __future__ import annotations

import json

import anthropic
import pytest
import requests

from helpers import MODEL, chat_prompt, leave_streams, make_token, start_proxy
from inference_api.mock.text import mock_answer, mock_word

WEATHER = {"name": "get_weather", "description": "The current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string",
                                                                       "maxLength": 20}},
                            "required": ["city"]}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# The current client has no sampling parameters; older ones send them, and the API takes them.
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def mock_proxy(mock_server):
    """The proxy in front of the shared mock API server."""
    with start_proxy(mock_server.url) as proxy:
        yield proxy


def client_at(url: str) -> anthropic.Anthropic:
    """The official client with a token as its API key (sent in x-api-key); no retries."""
    return anthropic.Anthropic(base_url=url, api_key=make_token(), max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def messages_api(mock_proxy):
    return client_at(mock_proxy.url)


def prompt_tokens(server, messages: list[dict]) -> int:
    return requests.post(server.url + "/tokenize", json={"messages": messages},
                         timeout=30).json()["count"]


# --- on the mock ------------------------------------------------------------------------------


def test_a_message_in_one_piece(messages_api, mock_server):
    message = messages_api.messages.create(model=MODEL, max_tokens=5, system="Be brief.",
                                     messages=[{"role": "user", "content": "one two"}])
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two"}]
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == MODEL
    [block] = message.content
    assert block.type == "text" and block.text == mock_answer(chat_prompt(turns), 5)
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == prompt_tokens(mock_server, turns)
    assert usage.output_tokens == 5


def test_content_blocks_and_system_blocks_are_text(messages_api):
    message = messages_api.messages.create(
        model=MODEL, max_tokens=4, system=[{"type": "text", "text": "S", "cache_control": {
            "type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "a"},
                                               {"type": "text", "text": "b"}]},
                  {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}])
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"},
             {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    assert message.content[0].text == mock_answer(chat_prompt(turns), 4)


def test_a_stop_sequence_ends_the_message_and_is_named(messages_api):
    prompt = chat_prompt([{"role": "user", "content": "x y"}])
    stop = mock_word(prompt, 3).strip()
    later = mock_word(prompt, 5).strip()  # given first, matched second: not the one named
    message = messages_api.messages.create(model=MODEL, max_tokens=20, stop_sequences=[later, stop],
                                     messages=[{"role": "user", "content": "x y"}],
                                     extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 10})
    assert message.content[0].text == mock_answer(prompt, 3)
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    with messages_api.messages.stream(model=MODEL, max_tokens=20, stop_sequences=[later, stop],
                                messages=[{"role": "user", "content": "x y"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop


def test_the_stream_gives_the_same_message_in_anthropics_events(messages_api, mock_proxy):
    whole = messages_api.messages.create(model=MODEL, max_tokens=12, messages=ASK)
    with messages_api.messages.stream(model=MODEL, max_tokens=12, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 12
    raw = requests.post(mock_proxy.url + "/v1/messages", timeout=60, stream=True,
                        headers={"x-api-key": make_token()},
                        json={"model": MODEL, "max_tokens": 3, "messages": ASK, "stream": True})
    names = [line.split(": ", 1)[1] for line in raw.iter_lines(decode_unicode=True)
             if line.startswith("event: ")]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]


def test_tools_round_trip(messages_api):
    message = messages_api.messages.create(model=MODEL, max_tokens=200, messages=ASK,
                                           tools=[WEATHER], tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    calls = [b for b in message.content if b.type == "tool_use"]
    assert calls and all(c.name == "get_weather" and set(c.input) == {"city"} for c in calls)
    assert calls[0].id.startswith("toolu_")
    history = ASK + [{"role": "assistant", "content": [c.model_dump() for c in calls]},
                     {"role": "user", "content": [
                         {"type": "tool_result", "tool_use_id": c.id, "content": "22C-sunny"}
                         for c in calls]}]
    answer = messages_api.messages.create(model=MODEL, max_tokens=80, messages=history,
                                    tools=[WEATHER], tool_choice={"type": "none"})
    assert answer.stop_reason == "max_tokens"
    assert "22C-sunny" in answer.content[0].text  # the mock's words are the prompt's


def test_tool_calls_stream_as_input_json_deltas(messages_api):
    with messages_api.messages.stream(model=MODEL, max_tokens=200, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    [call] = final.content
    assert call.type == "tool_use" and set(call.input) == {"city"}
    assert final.stop_reason == "tool_use"


def test_output_config_format_holds_the_text_to_a_schema(messages_api):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "sunny": {"type": "boolean"}},
              "required": ["city", "sunny"], "additionalProperties": False}
    message = messages_api.messages.create(model=MODEL, max_tokens=100, messages=ASK,
                                     output_config={"format": {"type": "json_schema",
                                                               "schema": schema}})
    assert set(json.loads(message.content[0].text)) == {"city", "sunny"}


def test_count_tokens_counts_the_prompt_as_messages_makes_it(messages_api, mock_server):
    counted = messages_api.messages.count_tokens(model=MODEL, messages=ASK, system="S")
    assert counted.input_tokens == prompt_tokens(
        mock_server, [{"role": "system", "content": "S"}] + ASK)
    with_tools = messages_api.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER])
    assert with_tools.input_tokens > prompt_tokens(mock_server, ASK)


BAD = [
    ("no max_tokens", {"messages": ASK}, "max_tokens is required"),
    ("an image block", {"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]}, "image"),
    ("a role of OpenAI's", {"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "role"),
    ("temperature over 1", {"max_tokens": 5, "messages": ASK, "temperature": 1.5}, "temperature"),
    ("tool_choice naming no tool", {"max_tokens": 5, "messages": ASK, "tools": [WEATHER],
                                    "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ("tool_use in a user turn", {"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}]}]}, "tool_use"),
    ("thinking", {"max_tokens": 5, "messages": ASK, "thinking": {"type": "enabled",
                                                                 "budget_tokens": 1024}},
     "thinking"),
    ("an unknown field", {"max_tokens": 5, "messages": ASK, "temprature": 1}, "temprature"),
    ("a bad output schema", {"max_tokens": 5, "messages": ASK, "output_config": {"format": {
        "type": "json_schema", "schema": {"type": "object", "properties": {"a": {
            "type": "string", "pattern": "[0-9"}}}}}}, "output_config.format.schema"),
]


@pytest.mark.parametrize("name,fields,words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_anthropics_error_shape(mock_proxy, name, fields, words):
    response = requests.post(mock_proxy.url + "/v1/messages", json={"model": MODEL, **fields},
                             headers={"x-api-key": make_token()}, timeout=30)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert words in body["error"]["message"]


def test_unknown_model_and_plain_text_body(messages_api, mock_proxy):
    with pytest.raises(anthropic.NotFoundError) as caught:
        messages_api.messages.create(model="messages_api-opus-4", max_tokens=5, messages=ASK)
    assert caught.value.body["error"]["type"] == "not_found_error"
    response = requests.post(mock_proxy.url + "/v1/messages", timeout=30,
                             data=json.dumps({"model": MODEL, "max_tokens": 2, "messages": ASK}),
                             headers={"x-api-key": make_token(), "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_proxy_takes_the_token_in_x_api_key_for_messages_only(mock_proxy):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=mock_proxy.url, api_key="not-a-jwt", max_retries=0
                            ).messages.create(model=MODEL, max_tokens=2, messages=ASK)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
    bearer = anthropic.Anthropic(base_url=mock_proxy.url, auth_token=make_token(),
                                 max_retries=0)
    assert bearer.messages.create(model=MODEL, max_tokens=2, messages=ASK).content
    chat = requests.post(mock_proxy.url + "/v1/chat/completions", timeout=30,
                         headers={"x-api-key": make_token()},
                         json={"model": MODEL, "max_tokens": 2, "messages": ASK})
    assert chat.status_code == 401 and chat.json()["error"]["type"] == "authentication_error"


def test_a_client_that_leaves_a_stream_frees_its_row(mock_server):
    client = anthropic.Anthropic(base_url=mock_server.url, api_key="unused", max_retries=0)
    streams = [client.messages.stream(model=MODEL, max_tokens=2000, messages=[
        {"role": "user", "content": f"leave {i}"}]).__enter__() for i in range(3)]
    leave_streams(mock_server, streams)


# --- on the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_messages_api(real_server):
    with start_proxy(real_server.url) as proxy:
        yield client_at(proxy.url)


@pytest.mark.slow
def test_real_model_answers_and_streams_the_same_greedy_message(real_messages_api):
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    whole = real_messages_api.messages.create(model=MODEL, max_tokens=30, messages=ask,
                                        extra_body=GREEDY)
    with real_messages_api.messages.stream(model=MODEL, max_tokens=30, messages=ask,
                                     extra_body=GREEDY) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed == whole.content[0].text and "Paris" in streamed
    assert whole.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.slow
def test_real_model_tool_round_trip(real_messages_api):
    message = real_messages_api.messages.create(model=MODEL, max_tokens=100, extra_body=GREEDY,
                                          messages=ASK, tools=[WEATHER],
                                          tool_choice={"type": "any"})
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert call.name == "get_weather" and set(call.input) == {"city"}
    history = ASK + [{"role": "assistant", "content": [call.model_dump()]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                   "content": "22 degrees and sunny"}]}]
    answer = real_messages_api.messages.create(model=MODEL, max_tokens=60, extra_body=GREEDY,
                                         messages=history, tools=[WEATHER])
    assert answer.stop_reason in ("end_turn", "tool_use", "max_tokens") and answer.content
