"""Tool calling in the generic format: request fields, prompt, answer schema, parsing, streams."""
from __future__ import annotations

import json
import random

import llguidance
import pytest
from pydantic import ValidationError

from inference_api.http.openai.protocol import describe_openai_error
from inference_api.http.openai.protocol_messages import ToolCall, ToolFields
from inference_api.serving.grammars import grammar_for_json_schema
from inference_api.serving.templates import render_chat
from inference_api.serving.tool_format import (ToolUse, answer_schema, closed, history_turns,
                                               prepare_turns, renders_tool_role,
                                               template_supports_tools, template_turns,
                                               tool_prompt)
from inference_api.serving.tool_stream import ToolStream, parse_answer

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "days": {"type": "integer"}},
           "required": ["city"]}
POINT = {"type": "object", "properties": {"at": {"$ref": "#/$defs/Point"}}, "required": ["at"],
         "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}},
                             "required": ["x"], "additionalProperties": False}}}
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tool(name: str, **function) -> dict:
    return {"type": "function", "function": {"name": name, **function}}


TOOLS = [tool("get_weather", description="The weather \"now\" in a city", parameters=WEATHER),
         tool("place", description="Marks a point", parameters=POINT), tool("ping")]


def fields(**body) -> ToolFields:
    return ToolFields.model_validate(body)


def use(choice="auto", parallel=True, tools=TOOLS) -> ToolUse:
    """The tool use of a request with these tools, tool_choice (a name: that function) and
    parallel_tool_calls."""
    named = {"type": "function", "function": {"name": choice}}
    return fields(tools=tools, tool_choice=choice if choice in ("auto", "none", "required")
                  else named, parallel_tool_calls=parallel).tool_use()


def refusal(**body) -> str:
    with pytest.raises(ValidationError) as info:
        fields(**body)
    return describe_openai_error(info.value)[0]


# --- request fields ---------------------------------------------------------------------------

def test_valid_tools_and_defaults():
    body = fields(tools=TOOLS)
    assert [t.function.name for t in body.tools] == ["get_weather", "place", "ping"]
    assert body.tools[2].function.parameters == {"type": "object", "properties": {}}
    assert body.effective_tool_choice == "auto" and body.parallel_tool_calls is True
    assert fields().effective_tool_choice == "none"


@pytest.mark.parametrize("body, words", [
    (dict(tools=[tool("get weather")]), ["tools.0.function.name", "'get weather'", "64"]),
    (dict(tools=[tool("x" * 65)]), ["tools.0.function.name", "1 to 64"]),
    (dict(tools=[tool("a"), tool("b"), tool("a")]), ["tools:", "'a' is given twice"]),
    (dict(tools=[tool("a", parameters={"type": "string"})]), ["parameters", '"object"']),
    (dict(tools=[tool("a", parameters=[1])]), ["tools.0.function.parameters"]),
    (dict(tools=[tool("a", colour="red")]), ["tools.0.function.colour is not supported"]),
    (dict(tools=[{"type": "retrieval", "function": {"name": "a"}}]), ["tools.0.type"]),
    (dict(tools=[tool("a")], tool_choice="sometimes"), ["tool_choice", '"required"',
                                                        "'sometimes'"]),
    (dict(tools=[tool("a")], tool_choice={"type": "function"}), ["tool_choice", '"name"']),
    (dict(tools=[tool("a")], tool_choice={"type": "function", "function": {"name": "b"}}),
     ["tool_choice", "'b'", "not in tools"]),
    (dict(tool_choice="required"), ["tool_choice", "'required'", "only allowed when tools"]),
    (dict(tool_choice={"type": "function", "function": {"name": "b"}}),
     ["tool_choice", "'b'", "only allowed when tools"]),
    (dict(tools=[tool("a")], parallel_tool_calls="yes"), ["parallel_tool_calls"]),
])
def test_refusals_name_the_fault(body, words):
    message = refusal(**body)
    assert all(word in message for word in words), message


def test_auto_and_none_without_tools_are_accepted():
    assert fields(tool_choice="auto").effective_tool_choice == "none"
    assert fields(tool_choice="none", tools=[]).effective_tool_choice == "none"


def test_a_bad_tool_does_not_hide_behind_tool_choice():
    message = refusal(tools=[tool("a b")], tool_choice="required")
    assert "tools.0.function.name" in message and "tool_choice" not in message


# --- prompt -----------------------------------------------------------------------------------

def test_prompt_describes_every_tool_and_the_answer_forms():
    text = tool_prompt(use())
    for t in TOOLS:
        assert json.dumps(t["function"]["name"]) in text
    assert json.dumps("The weather \"now\" in a city") in text
    assert json.dumps(WEATHER) in text
    assert '{"tool_calls": [{"name": ' in text and '{"response": ' in text
    assert "several tools" in text


def test_prompt_follows_tool_choice():
    required = tool_prompt(use("required", parallel=False))
    assert "must call at least one tool" in required and '"response"' not in required
    assert "one tool at a time" in required
    forced = tool_prompt(use("ping"))
    assert 'must call the tool "ping"' in forced and "get_weather" not in forced
    assert tool_prompt(use("none")) == ""
    unlisted = tool_prompt(use(), listed=False)
    assert "Marks a point" not in unlisted and unlisted.startswith("Answer with exactly one")


# --- answer schema ----------------------------------------------------------------------------

class ByteTokenizer:
    """256 one-byte tokens and an end token: a matcher over it accepts texts byte by byte."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


BYTES = llguidance.LLTokenizer(llguidance.TokenizerWrapper(ByteTokenizer()))


def accepts(schema: dict, text: str) -> bool:
    grammar = grammar_for_json_schema(schema)
    assert not llguidance.LLMatcher.validate_grammar_with_warnings(grammar, BYTES)[0]
    matcher = llguidance.LLMatcher(BYTES, grammar, log_level=0)
    return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


CALL_WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
CALL_PLACE = '{"name": "place", "arguments": {"at": {"x": 1.5}}}'
CALL_PING = '{"name": "ping", "arguments": {}}'


def calls(*items: str) -> str:
    return '{"tool_calls": [' + ", ".join(items) + "]}"


@pytest.mark.parametrize("choice, parallel, text, ok", [
    ("auto", True, calls(CALL_WEATHER, CALL_PLACE, CALL_PING), True),
    ("auto", True, '{"response": "Hello \\"you\\""}', True),
    ("auto", True, calls(), False),
    ("auto", True, calls('{"name": "get_weather", "arguments": {"days": 2}}'), False),
    ("auto", True, calls('{"name": "nope", "arguments": {}}'), False),
    ("auto", True, calls('{"arguments": {}, "name": "ping"}'), False),
    ("auto", True, calls('{"name": "place", "arguments": {"at": {"x": "far"}}}'), False),
    ("auto", False, calls(CALL_PING), True),
    ("auto", False, calls(CALL_PING, CALL_PING), False),
    ("required", True, calls(CALL_WEATHER, CALL_PING), True),
    ("required", True, '{"response": "no"}', False),
    ("ping", True, calls(CALL_PING), True),
    ("ping", True, calls(CALL_WEATHER), False),
    ("ping", True, calls(CALL_PING, CALL_PING), False),
])
def test_answer_schema_holds_the_answer(choice, parallel, text, ok):
    assert accepts(answer_schema(use(choice, parallel)), text) is ok


def test_name_comes_before_arguments_in_every_call_schema():
    schema = answer_schema(use())
    for call in schema["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"]:
        assert list(call["properties"]) == ["name", "arguments"]


def test_no_schema_when_tools_are_off():
    assert answer_schema(use("none")) is None
    assert answer_schema(use(tools=[])) is None


def test_objects_that_list_properties_are_closed_unless_they_say_otherwise():
    schema = {"type": "object", "properties": {
        "city": {"type": "string"},
        "where": {"type": "object", "properties": {"zip": {"type": "string"}}},
        "free": {"type": "object"},
        "open": {"type": "object", "properties": {}, "additionalProperties": True},
        "many": {"type": "array", "items": {"type": "object", "properties": {"a": {}}}},
        "properties": {"type": "object", "properties": {"b": {}}}},  # a property named so
        "$defs": {"d": {"type": "object", "properties": {"c": {}}}},
        "default": {"properties": {"kept": "as is"}}}
    held = closed(schema)
    props = held["properties"]
    assert held["additionalProperties"] is False
    assert props["where"]["additionalProperties"] is False
    assert "additionalProperties" not in props["free"]
    assert props["open"]["additionalProperties"] is True
    assert props["many"]["items"]["additionalProperties"] is False
    assert props["properties"]["additionalProperties"] is False
    assert held["$defs"]["d"]["additionalProperties"] is False
    assert held["default"] == {"properties": {"kept": "as is"}}  # data, not a schema
    assert closed(schema) == held and "additionalProperties" not in schema  # not changed


# --- parsing ----------------------------------------------------------------------------------

def test_parse_tool_calls():
    content, found = parse_answer(calls(CALL_WEATHER, CALL_PING))
    assert content is None
    assert [(c["type"], c["function"]["name"], c["function"]["arguments"]) for c in found] == [
        ("function", "get_weather", '{"city": "Paris"}'), ("function", "ping", "{}")]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 29 for c in found)
    assert found[0]["id"] != found[1]["id"]


def test_parse_response_decodes_the_string():
    assert parse_answer('{"response": "caf\\u00e9 \\ud83d\\ude00\\n\\"q\\" {x}"}') == (
        'café 😀\n"q" {x}', [])
    assert parse_answer(' {"response": ""}') == ("", [])


@pytest.mark.parametrize("text", [
    "Hello there", "", "[1, 2]", '{"other": 1}', '{"response": 5}',
    '{"tool_calls": [{"name": "ping", "arguments": {"a": tru}}]}',  # not JSON
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Par',  # cut
    '{"tool_calls": [{"arguments": {}}]}',  # no name
])
def test_parse_anything_else_gives_the_text(text):
    assert parse_answer(text) == (text, [])


def test_a_cut_response_gives_what_was_said():
    assert parse_answer('{"response": "It is sun') == ("It is sun", [])


def test_a_key_given_twice_ends_the_call():
    text = '{"tool_calls": [{"name": "ping", "arguments": {}, "arguments": {"a": 1}}]}'
    assert parse_answer(text) == (text, [])


def test_a_call_without_arguments_takes_none():
    assert parse_answer('{"tool_calls": [{"name": "ping"}]}')[1][0]["function"]["arguments"] \
        == "{}"


# --- streaming --------------------------------------------------------------------------------

SAMPLES = [
    calls(CALL_WEATHER, CALL_PLACE, CALL_PING),
    calls('{"name": "get_weather", "arguments": {"city": "{[\\"Q\\u00e9bec}]\\\\", "days": 3}}'),
    '{"tool_calls":[{"id":"x","arguments":{"a":[1,{"name":"no"}]},"name":"late"}]}',
    '{"response": "Sure: {\\"a\\": [1]} \\u00e9\\ud83d\\ude00\\t!"}',
    ' {"response": "cut sh',
    "plain words, not JSON",
    '{"nothing": "here"}',
]


def collect(deltas: list[dict]) -> tuple[str | None, list[tuple[str, str]]]:
    """The content and the (name, arguments) of the calls a stream's deltas spell."""
    content, found = [], []
    for delta in deltas:
        assert set(delta) in ({"content"}, {"tool_calls"})
        content += [delta["content"]] if "content" in delta else []
        for part in delta.get("tool_calls", ()):
            if "id" in part:
                assert part["index"] == len(found) and part["type"] == "function"
                assert part["function"]["arguments"] == ""
                found.append([part["function"]["name"], ""])
            else:
                assert set(part) == {"index", "function"} and set(part["function"]) == {
                    "arguments"}
                found[part["index"]][1] += part["function"]["arguments"]
    return "".join(content), [tuple(f) for f in found]


def streamed(pieces: list[str]) -> tuple:
    stream = ToolStream()
    deltas = [d for piece in pieces for d in stream.feed(piece)] + stream.finish()
    return collect(deltas), stream.called


def splits(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@pytest.mark.parametrize("text", SAMPLES)
def test_stream_matches_parse_under_any_split(text):
    content, found = parse_answer(text)
    expected = (content or "", [(c["function"]["name"], c["function"]["arguments"])
                                for c in found])
    assert streamed([text]) == (expected, bool(found))
    assert streamed(list(text)) == (expected, bool(found))
    rng = random.Random(text)
    for _ in range(30):
        assert streamed(splits(text, rng)) == (expected, bool(found))


def test_stream_sends_the_call_head_once_the_name_is_complete():
    stream = ToolStream()
    assert stream.feed('{"tool_calls": [{"name": "get_wea') == []
    head, first = stream.feed('ther", "arguments": {"ci')
    [part] = head["tool_calls"]
    assert part == {"index": 0, "id": part["id"], "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}
    assert first == {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}
    assert stream.feed('ty": "Paris"}}, ') == [
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}]
    assert stream.feed('{"name": "ping", "arguments": {}}]}')[1] == {
        "tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}
    assert stream.finish() == [] and stream.called


def test_a_call_repeating_an_earlier_one_is_not_sent():
    """A looping model writes the same call again and again; the function runs once."""
    paris = '{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}'
    same = '{"name": "get_weather", "arguments": {"days": 2, "city": "Paris"}}'
    rome = '{"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}'
    text = '{"tool_calls": [' + ", ".join([paris, same, paris, rome, same, rome]) + "]}"
    content, found = parse_answer(text)
    assert content is None
    assert [json.loads(c["function"]["arguments"])["city"] for c in found] == ["Paris", "Rome"]
    for pieces in (list(text), [text]):
        (_, streamed_calls), called = streamed(pieces)
        assert [json.loads(args)["city"] for _, args in streamed_calls] == ["Paris", "Rome"]
        assert called
    assert len(parse_answer(calls(CALL_PING, CALL_PING, CALL_WEATHER))[1]) == 2


def test_stream_content_pieces_as_they_come():
    stream = ToolStream()
    assert stream.feed('{"response": "Hel') == [{"content": "Hel"}]
    assert stream.feed("lo \\u00") == [{"content": "lo "}]
    assert stream.feed("e9 \\ud83d") == [{"content": "é "}]  # half a pair waits for the other
    assert stream.feed('\\ude00"}') == [{"content": "😀"}]
    assert stream.finish() == [] and not stream.called


def test_stream_passes_text_that_is_not_json_as_content():
    stream = ToolStream()
    assert stream.feed("Hi") == [{"content": "Hi"}]
    assert stream.feed(" there") == [{"content": " there"}]


# --- history and templates ----------------------------------------------------------------------

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
]


def test_history_tool_calls_validate():
    call = HISTORY[2]["tool_calls"][0]
    assert ToolCall.model_validate(call).model_dump() == call
    with pytest.raises(ValidationError):
        ToolCall.model_validate({**call, "function": {"name": "f", "arguments": {"a": 1}}})


def test_history_turns_render_calls_and_results_as_the_format():
    turns = history_turns(HISTORY, tool_role=True)
    assert turns[:2] == HISTORY[:2]
    assert turns[2] == {"role": "assistant", "content": calls(CALL_WEATHER)}
    assert turns[3] == {"role": "tool", "content": json.dumps({"tool_response": {
        "tool_call_id": "call_1", "name": "get_weather", "content": "22 C"}})}
    assert history_turns(HISTORY, tool_role=False)[3]["role"] == "user"


def test_prepare_turns_adds_the_tools_to_the_system_message():
    turns = prepare_turns(HISTORY, use(), tool_role=True)
    assert turns[0]["content"].startswith("Be brief.\n\nYou can call these tools")
    new = prepare_turns(HISTORY[1:], use(), tool_role=True)
    assert new[0]["role"] == "system" and len(new) == len(HISTORY)
    assert prepare_turns(HISTORY, use("none"), True)[0] == HISTORY[0]
    text = render_chat(CHATML, turns)
    assert "<|im_start|>tool\n" in text and "get_weather" in text


def test_template_probes():
    assert renders_tool_role(lambda messages: render_chat(CHATML, messages))
    strict = ("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
              "{{ raise_exception('bad role') }}{% endif %}{{ m['content'] }}{% endfor %}")
    assert not renders_tool_role(lambda messages: render_chat(strict, messages))
    assert template_supports_tools("{% if tools %}{{ tools | tojson }}{% endif %}")
    assert not template_supports_tools(CHATML) and not template_supports_tools(None)


def test_template_turns_give_arguments_as_objects():
    turns = template_turns(HISTORY)
    assert turns[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert turns[2]["tool_calls"][0]["id"] == "call_1" and turns[3] == HISTORY[3]
    assert HISTORY[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


def random_text(rng: random.Random) -> str:
    """A string of what troubles a scanner: brackets, quotes, escapes, surrogate pairs."""
    return "".join(rng.choice(['{', '}', '[', ']', '"', '\\', ',', ':', 'a', ' ', 'é', '😀',
                               '\n', '\u2028']) for _ in range(rng.randint(0, 6)))


def random_value(rng: random.Random, depth: int = 0):
    """A JSON value of any kind, nested a few levels."""
    kind = rng.choice("sn" if depth > 2 else "snbloa")
    if kind == "s":
        return random_text(rng)
    if kind == "n":
        return rng.choice([0, -1.5, 2e10, 42])
    if kind == "b":
        return rng.choice([True, False, None])
    if kind == "l":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {random_text(rng) if kind == "o" else "k": random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def test_random_answers_stream_as_they_parse():
    rng = random.Random(7)
    for _ in range(60):
        ascii_only = rng.random() < 0.5
        if rng.random() < 0.3:
            text = json.dumps({"response": random_text(rng)}, ensure_ascii=ascii_only)
        else:
            arguments = [{"k": random_value(rng)} for _ in range(rng.randint(1, 3))]
            text = json.dumps({"tool_calls": [{"name": f"f{i}", "arguments": a}
                                              for i, a in enumerate(arguments)]},
                              ensure_ascii=ascii_only, indent=rng.choice([None, 1]))
        content, found = parse_answer(text)
        if found:
            assert [json.loads(c["function"]["arguments"]) for c in found] == arguments
        else:
            assert content == json.loads(text)["response"]
        expected = (content or "", [(c["function"]["name"], c["function"]["arguments"])
                                    for c in found])
        assert streamed(splits(text, rng)) == (expected, bool(found))
