"""OpenAI's Responses API through the official openai client and the JWT proxy: on the mock,
then on the real model."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import requests

from helpers import MODEL, PERSON, chat_prompt, leave_streams, make_token, start_proxy
from inference_api.mock.text import mock_answer

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                     "maxLength": 20}},
                          "required": ["city"]}}
ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def mock_proxy(mock_server):
    """The proxy in front of the shared mock API server."""
    with start_proxy(mock_server.url) as proxy:
        yield proxy


def client_at(url: str) -> openai.OpenAI:
    """The official client with a token as its API key; no retries."""
    return openai.OpenAI(base_url=url + "/v1", api_key=make_token(), max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def oai(mock_proxy):
    return client_at(mock_proxy.url)


def prompt_tokens(server, messages: list[dict]) -> int:
    return requests.post(server.url + "/tokenize", json={"messages": messages},
                         timeout=30).json()["count"]


# --- on the mock ------------------------------------------------------------------------------


def test_a_response_in_one_piece(oai, mock_server):
    response = oai.responses.create(model=MODEL, input="one two", max_output_tokens=5)
    turns = [{"role": "user", "content": "one two"}]
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text == mock_answer(chat_prompt(turns), 5)
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.input_tokens == prompt_tokens(mock_server, turns)
    assert response.usage.output_tokens == 5
    assert response.usage.total_tokens == response.usage.input_tokens + 5
    assert response.temperature == 0.7 and response.top_p == 0.9  # the server's defaults
    assert oai.responses.create(model=MODEL, input="x", max_output_tokens=1,
                                temperature=0.25).temperature == 0.25


def test_instructions_and_input_items_reach_the_template(oai):
    response = oai.responses.create(
        model=MODEL, instructions="Be brief.", max_output_tokens=6,
        input=[{"role": "developer", "content": "D"},
               {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text",
                                                                 "text": "b"}]},
               {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
               {"role": "user", "content": "d"}])
    turns = [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "D"},
             {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"},
             {"role": "user", "content": "d"}]
    assert response.output_text == mock_answer(chat_prompt(turns), 6)


def test_the_stream_gives_the_same_response_in_typed_events(oai):
    whole = oai.responses.create(model=MODEL, input=ASK, max_output_tokens=4)
    events = list(oai.responses.create(model=MODEL, input=ASK, max_output_tokens=4, stream=True))
    kinds = [event.type for event in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * 4 + [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.incomplete"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == events[-1].response.output_text
    # The client's helper gives a final response for a completed one (the mock ends an answer
    # only where a structured output ends; greedy, it gives one answer per prompt).
    form = {"format": {"type": "json_object"}}
    whole = oai.responses.create(model=MODEL, input=ASK, max_output_tokens=60, text=form,
                                 temperature=0)
    with oai.responses.stream(model=MODEL, input=ASK, max_output_tokens=60, text=form,
                              temperature=0) as stream:
        final = stream.get_final_response()
    assert final.status == whole.status == "completed"
    assert final.output_text == whole.output_text and isinstance(json.loads(whole.output_text),
                                                                 dict)


def test_text_format_json_schema_holds_the_answer(oai):
    response = oai.responses.create(model=MODEL, input="a person", max_output_tokens=300, text={
        "format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    jsonschema.validate(json.loads(response.output_text), PERSON)
    assert response.text.format.type == "json_schema"


def test_function_tool_round_trip_by_items_and_by_previous_response_id(oai):
    first = oai.responses.create(model=MODEL, input=ASK, tools=[WEATHER],
                                 tool_choice="required", max_output_tokens=200)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and all(c.name == "get_weather" and c.call_id.startswith("call_")
                         and set(json.loads(c.arguments)) == {"city"} for c in calls)
    results = [{"type": "function_call_output", "call_id": c.call_id, "output": "22C-sunny"}
               for c in calls]
    by_items = oai.responses.create(
        model=MODEL, tools=[WEATHER], tool_choice="none", max_output_tokens=80,
        input=[{"role": "user", "content": ASK}] + [c.model_dump() for c in calls] + results)
    assert "22C-sunny" in by_items.output_text  # the mock's words are the prompt's
    chained = oai.responses.create(model=MODEL, previous_response_id=first.id, input=results,
                                   tools=[WEATHER], tool_choice="none", max_output_tokens=80)
    assert chained.output_text == by_items.output_text
    assert chained.previous_response_id == first.id


def test_function_calls_stream_as_argument_deltas(oai):
    events = list(oai.responses.create(model=MODEL, input=ASK, tools=[WEATHER], stream=True,
                                       tool_choice={"type": "function", "name": "get_weather"},
                                       max_output_tokens=200))
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert set(json.loads(done.arguments)) == {"city"}
    [call] = events[-1].response.output
    assert call.type == "function_call" and call.arguments == done.arguments
    assert events[-1].type == "response.completed"


def test_stored_responses_can_be_read_and_deleted(oai):
    response = oai.responses.create(model=MODEL, input="keep me", max_output_tokens=3)
    assert oai.responses.retrieve(response.id).output_text == response.output_text
    deleted = oai.responses.delete(response.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)
    unstored = oai.responses.create(model=MODEL, input="forget me", max_output_tokens=3,
                                    store=False)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model=MODEL, input="x", previous_response_id=unstored.id)
    assert caught.value.body["code"] == "previous_response_not_found"
    assert caught.value.body["param"] == "previous_response_id"


BAD = [
    ("no input", {}, "input", "input is required"),
    ("empty input", {"input": []}, "input", "at least 1 item"),
    ("a reasoning item", {"input": [{"type": "reasoning", "summary": []}]}, "input.0",
     "reasoning"),
    ("an image part", {"input": [{"role": "user", "content": [{"type": "input_image",
                                                               "image_url": "http://x/y.png"}]}]},
     "input.0", "input_image"),
    ("temperature over 2", {"input": "x", "temperature": 3}, "temperature", "temperature"),
    ("tool_choice naming no tool", {"input": "x", "tools": [WEATHER],
                                    "tool_choice": {"type": "function", "name": "nope"}},
     "body", "nope"),
    ("a bad schema", {"input": "x", "text": {"format": {"type": "json_schema", "name": "p",
                                                        "schema": {"type": "nothing"}}}},
     "text.format", "text.format"),
    ("background", {"input": "x", "background": True}, "background", "background"),
    ("an unknown field", {"input": "x", "temprature": 1}, "temprature", "temprature"),
]


@pytest.mark.parametrize("name,fields,param,words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openais_error_shape(mock_proxy, name, fields, param, words):
    response = requests.post(mock_proxy.url + "/v1/responses", json={"model": MODEL, **fields},
                             headers={"Authorization": f"Bearer {make_token()}"}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"].startswith(param)
    assert words in error["message"]


def test_unknown_model_and_plain_text_body(oai, mock_proxy):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.create(model="gpt-5", input="x")
    assert caught.value.body["code"] == "model_not_found"
    response = requests.post(mock_proxy.url + "/v1/responses", timeout=30,
                             data=json.dumps({"model": MODEL, "input": "x"}),
                             headers={"Authorization": f"Bearer {make_token()}",
                                      "Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["error"]["param"] is None


def test_a_client_that_leaves_a_stream_frees_its_row(mock_server):
    client = openai.OpenAI(base_url=mock_server.url + "/v1", api_key="unused", max_retries=0)
    streams = [client.responses.create(model=MODEL, input=f"leave {i}", stream=True,
                                       max_output_tokens=2000) for i in range(3)]
    leave_streams(mock_server, streams)


# --- on the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_oai(real_server):
    with start_proxy(real_server.url) as proxy:
        yield client_at(proxy.url)


@pytest.mark.slow
def test_real_model_answers_and_streams_the_same_greedy_response(real_oai):
    ask = "What is the capital of France?"
    whole = real_oai.responses.create(model=MODEL, input=ask, max_output_tokens=30,
                                      temperature=0)
    with real_oai.responses.stream(model=MODEL, input=ask, max_output_tokens=30,
                                   temperature=0) as stream:
        streamed = stream.get_final_response()
    assert streamed.output_text == whole.output_text and "Paris" in whole.output_text


@pytest.mark.slow
def test_real_model_function_round_trip(real_oai):
    first = real_oai.responses.create(model=MODEL, input=ASK, tools=[WEATHER], temperature=0,
                                      tool_choice="required", max_output_tokens=100)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and all(set(json.loads(c.arguments)) == {"city"} for c in calls)
    answer = real_oai.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER], temperature=0,
        max_output_tokens=60, input=[{"type": "function_call_output", "call_id": c.call_id,
                                      "output": "22 degrees and sunny"} for c in calls])
    assert answer.status in ("completed", "incomplete") and answer.output
