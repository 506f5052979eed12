"""What clients of vLLM and llama.cpp send to /v1, answered as those servers answer it:
vLLM's structured-output fields, llama.cpp's response_format forms, lenient messages, JSON
bodies only, tool arguments held to the declared properties. On the shared mock server."""
from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
import requests

from helpers import MODEL, PERSON, chat_prompt, client_for
from inference_api.mock.text import mock_answer

ASK = [{"role": "user", "content": "Say something"}]
CODE = r"[0-9]{3}-[a-z]{2}"
YES_NO = 'root ::= "yes" | "no"'


def chat(client, **extra) -> list[str]:
    result = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=200, n=4,
                                            extra_body=extra)
    return [c.message.content for c in result.choices]


def complete(client, **extra) -> list[str]:
    result = client.completions.create(model=MODEL, prompt="Say:", max_tokens=200, n=4,
                                       extra_body=extra)
    return [c.text for c in result.choices]


@pytest.mark.parametrize("route", [chat, complete], ids=["chat", "completions"])
def test_vllm_structured_outputs_hold_the_answer(client, route):
    assert all(re.fullmatch(CODE, t) for t in route(client, structured_outputs={"regex": CODE}))
    assert set(route(client, structured_outputs={"choice": ["red", "green", "blue"]})) <= {
        "red", "green", "blue"}
    assert set(route(client, structured_outputs={"grammar": YES_NO})) <= {"yes", "no"}
    for text in route(client, structured_outputs={"json": PERSON}):
        jsonschema.validate(json.loads(text), PERSON)
    for text in route(client, structured_outputs={"json_object": True}):
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("route", [chat, complete], ids=["chat", "completions"])
def test_vllm_guided_fields_hold_the_answer(client, route):
    assert all(re.fullmatch(CODE, t) for t in route(client, guided_regex=CODE))
    assert set(route(client, guided_choice=["a b", 'say "hi"'])) <= {"a b", 'say "hi"'}
    assert set(route(client, guided_grammar=YES_NO)) <= {"yes", "no"}
    for schema in (PERSON, json.dumps(PERSON)):  # vLLM takes the schema as JSON text too
        for text in route(client, guided_json=schema):
            jsonschema.validate(json.loads(text), PERSON)


BAD_STRUCTURED = [
    ("guided_regex", {"guided_regex": "[0-9"}, "unclosed character class"),
    ("structured_outputs", {"structured_outputs": {"regex": "(a"}}, "structured_outputs.regex"),
    ("guided_grammar", {"guided_grammar": "root ::= \"a"}, "guided_grammar"),
    ("structured_outputs", {"structured_outputs": {"grammar": "root ::= x"}},
     "structured_outputs.grammar"),
    ("guided_choice", {"guided_choice": []}, "non-empty list"),
    ("guided_json", {"guided_json": "{not json"}, "guided_json"),
    ("structured_outputs", {"structured_outputs": {"regex": "a", "choice": ["a"]}},
     "not several"),
    ("structured_outputs", {"structured_outputs": {"regexp": "a"}}, "unknown field 'regexp'"),
    ("guided_choice", {"guided_regex": "a", "guided_choice": ["a"]}, "not several"),
]


@pytest.mark.parametrize("param,extra,words", BAD_STRUCTURED, ids=[b[2] for b in BAD_STRUCTURED])
def test_bad_regex_grammar_or_choice_is_a_400_naming_the_field(client, param, extra, words):
    for create in (lambda: client.chat.completions.create(model=MODEL, messages=ASK,
                                                          max_tokens=5, extra_body=extra),
                   lambda: client.completions.create(model=MODEL, prompt="a", max_tokens=5,
                                                     extra_body=extra)):
        with pytest.raises(openai.BadRequestError) as caught:
            create()
        assert caught.value.body["param"] == param
        assert words in caught.value.body["message"]


def test_llama_cpp_response_format_forms(client):
    forms = [{"type": "json_object", "schema": PERSON},
             {"type": "json_schema", "json_schema": {"schema": PERSON}},  # no name
             {"type": "json_schema", "schema": PERSON}]
    for form in forms:
        result = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=300, n=2,
                                                response_format=form)
        for choice in result.choices:
            jsonschema.validate(json.loads(choice.message.content), PERSON)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "bad name!", "schema": PERSON}})
    assert caught.value.body["param"] == "response_format"


def test_extra_message_fields_are_ignored_and_custom_roles_reach_the_template(client):
    messages = [{"role": "my-custom-role", "content": "be brief"},
                {"role": "user", "content": "hello there", "refusal": None, "x-client": 7}]
    result = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6)
    template_sees = [{"role": "my-custom-role", "content": "be brief"},
                     {"role": "user", "content": "hello there"}]
    assert result.choices[0].message.content == mock_answer(chat_prompt(template_sees), 6)
    assert "my-custom-role:" in chat_prompt(template_sees)
    with pytest.raises(openai.BadRequestError) as caught:  # a role is still a short word
        client.chat.completions.create(model=MODEL, max_tokens=2,
                                       messages=[{"role": "r" * 65, "content": "x"}])
    assert caught.value.body["param"] == "messages.0.role"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_a_415(mock_server, path, media):
    body = {"model": MODEL, "prompt": "a", "messages": ASK, "max_tokens": 2}
    response = requests.post(mock_server.url + path, data=json.dumps(body), timeout=30,
                             headers={"Content-Type": media})
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "application/json" in error["message"]
    for sent in ("application/json; charset=utf-8", None):  # no header: read as JSON
        response = requests.post(mock_server.url + path, data=json.dumps(body).encode(),
                                 timeout=30, headers={"Content-Type": sent} if sent else {})
        assert response.status_code == 200, response.text


# LangChain's bind_tools sends a function's parameters without additionalProperties.
OPEN_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
FREE_DICT = {"type": "function", "function": {
    "name": "tag", "description": "Tag a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "extra": {"type": "object"}},
                   "required": ["city", "extra"], "additionalProperties": False}}}


def test_tool_arguments_hold_to_the_declared_properties(client):
    """The mock draws any bytes the grammar allows: an open schema would let it add keys."""
    for seed in range(3):
        result = client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=300, n=4, seed=seed, temperature=1,
            tools=[OPEN_WEATHER], tool_choice="required")
        for choice in result.choices:
            for call in choice.message.tool_calls:
                assert set(json.loads(call.function.arguments)) == {"city"}


def test_declared_free_objects_stay_open(client):
    """An object the schema leaves without properties is the user's to fill."""
    result = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=400, n=4, seed=5, temperature=1, tools=[FREE_DICT],
        tool_choice="required")
    calls = [c for choice in result.choices for c in choice.message.tool_calls]
    assert all(set(json.loads(c.function.arguments)) == {"city", "extra"} for c in calls)
    assert any(json.loads(c.function.arguments)["extra"] for c in calls)


# --- on the real model ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_tool_calls_take_only_the_declared_arguments(real_server):
    """LangChain's bind_tools(get_weather(city: str)) with tool_choice "required"."""
    client = client_for(real_server).with_options(timeout=600)  # a shared machine is slow
    for temperature in (0, 0.7):
        result = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            max_tokens=60, n=2, seed=3, temperature=temperature, tools=[OPEN_WEATHER],
            tool_choice="required")
        for choice in result.choices:
            arguments = [json.loads(call.function.arguments) for call in
                         choice.message.tool_calls]
            assert all(call.function.name == "get_weather" for call in choice.message.tool_calls)
            assert arguments and all(set(a) == {"city"} for a in arguments)
            # Greedy, the model writes the same call again until max_tokens: sent once.
            assert len({json.dumps(a, sort_keys=True) for a in arguments}) == len(arguments)


@pytest.mark.slow
def test_real_model_follows_vllm_regex_and_choice(real_server):
    client = client_for(real_server).with_options(timeout=600)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is Paris in France?"}],
        max_tokens=10, extra_body={"guided_choice": ["yes", "no"]}).choices[0].message.content
    assert answer in ("yes", "no")
    text = client.completions.create(model=MODEL, prompt="A phone number: ", max_tokens=20,
                                     extra_body={"structured_outputs": {"regex": CODE}}
                                     ).choices[0].text
    assert re.fullmatch(CODE, text)
