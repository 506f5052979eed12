"""Structured outputs and tools through the official client: the mock, then the real model."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from helpers import MODEL, PERSON, client_for

PERSON_FORMAT = {"type": "json_schema",
                 "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}},
                   "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def assert_tool_calls_valid(calls, tools: list[dict]) -> None:
    """Every call names a given tool, and its arguments validate against its parameters."""
    parameters = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), parameters[call.function.name])


# --- on the mock: the shapes, the routes and the errors ------------------------------------


def test_mock_answers_follow_a_schema(client):
    result = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=300, n=3,
                                            seed=1, response_format=PERSON_FORMAT)
    for choice in result.choices:
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_mock_greedy_structured_answers_repeat_and_others_vary(client):
    """As on a model, a greedy request has one answer; unseeded sampled ones vary."""
    def ask(**kw):
        return client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=300,
                                              response_format=PERSON_FORMAT, **kw
                                              ).choices[0].message.content

    assert len({ask(temperature=0) for _ in range(3)}) == 1
    assert len({ask(temperature=1) for _ in range(4)}) > 1


def test_mock_json_object_and_completions_json_schema(client):
    result = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100,
                                            response_format={"type": "json_object"})
    assert isinstance(json.loads(result.choices[0].message.content), dict)
    completion = client.completions.create(model=MODEL, prompt="a person:", max_tokens=300,
                                           extra_body={"json_schema": PERSON})
    jsonschema.validate(json.loads(completion.choices[0].text), PERSON)
    gbnf = client.completions.create(model=MODEL, prompt="yes or no?", max_tokens=10,
                                     extra_body={"grammar": 'root ::= "yes" | "no"'})
    assert gbnf.choices[0].text in ("yes", "no")


def test_mock_output_cut_by_max_tokens_still_validates(client):
    # The mock's tokens are bytes: the shortest valid person takes 92 of them.
    for max_tokens in (92, 100, 130):
        result = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=max_tokens,
                                                response_format=PERSON_FORMAT, seed=max_tokens)
        jsonschema.validate(json.loads(result.choices[0].message.content), PERSON)
        assert result.usage.completion_tokens <= max_tokens


def test_max_tokens_too_small_for_the_schema_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40,
                                       response_format=PERSON_FORMAT)
    assert "at least 92 tokens" in caught.value.body["message"]


def test_mock_tool_calls_whole_and_streamed(client):
    result = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=200,
                                            tools=[WEATHER, TIME], tool_choice="required")
    [choice] = result.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert_tool_calls_valid(choice.message.tool_calls, [WEATHER, TIME])
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=200, tools=[WEATHER, TIME], stream=True,
        tool_choice={"type": "function", "function": {"name": "get_time"}}))
    calls: dict[int, dict] = {}
    finish = None
    for chunk in chunks:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for part in c.delta.tool_calls or ():
                call = calls.setdefault(part.index, {"name": None, "arguments": ""})
                if part.function.name:
                    assert part.id.startswith("call_") and call["name"] is None
                    call["name"] = part.function.name
                call["arguments"] += part.function.arguments or ""
    assert finish == "tool_calls" and [c["name"] for c in calls.values()] == ["get_time"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), TIME["function"]["parameters"])


def test_mock_tool_history_is_accepted(client):
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather",
                         "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"}]
    result = client.chat.completions.create(model=MODEL, messages=history, max_tokens=50,
                                            tools=[WEATHER], tool_choice="none")
    assert result.choices[0].message.tool_calls is None
    # The mock's answer is made of its prompt's words: the tool result was rendered into it.
    assert '{"tool_response":' in result.choices[0].message.content


BAD = [
    ("response_format", dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nonsense"}}}), "schema"),
    ("response_format", dict(response_format={"type": "xml"}), "type"),
    ("response_format", dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$ref": "#/$defs/missing"}}}), "schema"),
    ("response_format", dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "(unclosed"}}}), "schema"),
    ("tools", dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "name"),
    ("tools", dict(tools=[WEATHER, WEATHER]), "twice"),
    ("tools", dict(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "array"}}}]), "object"),
    ("tool_choice", dict(tools=[WEATHER], tool_choice={
        "type": "function", "function": {"name": "get_time"}}), "get_time"),
    ("tool_choice", dict(tool_choice="required"), "tools"),
]


@pytest.mark.parametrize("param,kwargs,words", BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_bad_schemas_and_tools_are_400s_that_say_why(client, param, kwargs, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, **kwargs)
    error = caught.value.body
    assert error["param"].split(".")[0] == param and words in error["message"], error


def test_structured_output_refuses_ignore_eos(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5,
                                       response_format={"type": "json_object"},
                                       extra_body={"ignore_eos": True})
    assert "ignore_eos" in caught.value.body["message"]


# --- on the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(real_server):
    return client_for(real_server)


@pytest.mark.slow
def test_real_answers_validate_twenty_times_with_sampling(real):
    result = real.chat.completions.create(
        model=MODEL, n=20, temperature=1.0, seed=11, max_tokens=200,
        response_format=PERSON_FORMAT,
        messages=[{"role": "user", "content": "Describe a user of a web shop as JSON."}])
    assert len(result.choices) == 20
    for choice in result.choices:
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    assert len({c.message.content for c in result.choices}) > 1  # sampled, not one answer


@pytest.mark.slow
def test_real_answers_cut_by_max_tokens_validate_and_say_length(real):
    result = real.chat.completions.create(
        model=MODEL, temperature=1.0, seed=3, max_tokens=45, n=6, response_format=PERSON_FORMAT,
        messages=[{"role": "user", "content": "Describe a person with long names and tags."}])
    for choice in result.choices:
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    # 45 tokens hold the shortest person (38) but seldom a sampled one: most are completed
    # as the budget runs out.
    assert sum(c.finish_reason == "length" for c in result.choices) >= 1
    assert result.usage.completion_tokens <= 6 * 45


@pytest.mark.slow
def test_real_tool_call_round_trip(real):
    first = real.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100,
                                         temperature=0, tools=[WEATHER, TIME],
                                         tool_choice="required")
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert_tool_calls_valid(message.tool_calls, [WEATHER, TIME])
    history = ASK + [message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": call.id, "content": "22 degrees celsius, sunny"}
        for call in message.tool_calls]
    second = real.chat.completions.create(model=MODEL, messages=history, max_tokens=100,
                                          temperature=0, tools=[WEATHER, TIME])
    answer = second.choices[0]
    if answer.message.tool_calls:  # auto: the model may call again, always well-formed
        assert_tool_calls_valid(answer.message.tool_calls, [WEATHER, TIME])
    else:
        assert answer.message.content and answer.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_real_named_tool_choice_calls_that_tool(real):
    result = real.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=100, temperature=0.8, seed=5, n=4,
        tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    for choice in result.choices:
        assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
        assert_tool_calls_valid(choice.message.tool_calls, [TIME])
