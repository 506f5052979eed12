"""Structured outputs: request constraints to grammars, hostile schemas, masks, closings when
max_tokens cuts, and the mock's byte chooser; every output must parse and follow its schema."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from inference_api.mock.grammar import BYTE_TOKENS, MOCK_GRAMMAR_EOS, MockGrammarRows, byte_tokenizer
from inference_api.mock.text import ByteDetokenizer, MockTextMaker
from inference_api.sampling.closing import closing, start_matcher
from inference_api.serving.grammars import (grammar_for_gbnf, grammar_for_json_schema,
                                            grammar_for_response_format)
from inference_api.sampling_params import SamplingParams

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {"type": "object", "additionalProperties": False, "required": ["city", "zip"],
                    "properties": {"city": {"type": "string", "maxLength": 12},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def check_instance(value, schema: dict, path: str = "$") -> None:
    """AssertionError unless value follows schema (the keywords these tests use)."""
    kind = schema.get("type")
    if kind in ("integer", "number"):
        wanted = int if kind == "integer" else (int, float)
        assert isinstance(value, wanted) and not isinstance(value, bool), path
    elif kind is not None:
        assert isinstance(value, TYPES[kind]), f"{path}: {value!r} is not {kind}"
    if "enum" in schema:
        assert value in schema["enum"], path
    if "exclusiveMinimum" in schema:
        assert value > schema["exclusiveMinimum"], path
    if "minimum" in schema:
        assert value >= schema["minimum"], path
    if "maximum" in schema:
        assert value <= schema["maximum"], path
    if "minLength" in schema:
        assert len(value) >= schema["minLength"], path
    if "maxLength" in schema:
        assert len(value) <= schema["maxLength"], path
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), path
    if "minItems" in schema:
        assert len(value) >= schema["minItems"], path
    if "maxItems" in schema:
        assert len(value) <= schema["maxItems"], path
    for key in schema.get("required", []):
        assert key in value, f"{path}: {key} missing"
    props = schema.get("properties", {})
    if kind == "object":
        for key, item in value.items():
            assert key in props or schema.get("additionalProperties", True), f"{path}.{key}"
            if key in props:
                check_instance(item, props[key], f"{path}.{key}")
    if kind == "array":
        for i, item in enumerate(value):
            check_instance(item, schema.get("items", {}), f"{path}[{i}]")


# --- request shapes -------------------------------------------------------------------------

def test_response_format_shapes_compile():
    assert grammar_for_response_format({"type": "text"}) is None
    assert "json_schema" in grammar_for_response_format({"type": "json_object"})
    grammar = grammar_for_response_format({"type": "json_schema", "json_schema": {
        "name": "person-1", "schema": PERSON, "strict": True, "description": "a person"}})
    assert '"maxLength":20' in grammar.replace(" ", "")
    for strict in (False, None):  # the schema is enforced all the same
        assert grammar_for_response_format({"type": "json_schema", "json_schema": {
            "name": "p", "schema": PERSON, "strict": strict}}) == grammar


@pytest.mark.parametrize("response_format, words", [
    ({"type": "xml"}, "response_format.type must be one of text, json_object, json_schema"),
    ({}, "response_format.type"),
    ("json", "response_format must be an object"),
    ({"type": "json_schema"}, "response_format.json_schema must be an object"),
    ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "x" * 65, "schema": {}}}, "1 to 64"),
    ({"type": "json_schema", "json_schema": {"name": "n"}}, "json_schema.schema is required"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": [1]}},
     "response_format.json_schema.schema must be a JSON object"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {}, "strict": "yes"}},
     "strict must be true, false or null"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {}, "x": 1}},
     "unknown field 'x'"),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "nonsense"}}},
     "response_format.json_schema.schema is not valid: Invalid type: nonsense"),
])
def test_bad_response_formats_say_what_is_wrong(response_format, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        grammar_for_response_format(response_format)


def test_llama_cpp_forms_without_a_name_or_with_the_schema_beside_the_type():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    named = grammar_for_response_format({"type": "json_schema", "json_schema": {
        "name": "n", "schema": schema}})
    assert grammar_for_response_format({"type": "json_schema",
                                        "json_schema": {"schema": schema}}) == named
    assert grammar_for_response_format({"type": "json_schema", "schema": schema}) == named
    assert grammar_for_response_format({"type": "json_object", "schema": schema}) == named
    with pytest.raises(ValueError, match="not both"):
        grammar_for_response_format({"type": "json_schema", "schema": schema,
                                     "json_schema": {"schema": schema}})


def nested(depth: int) -> dict:
    """An array schema nested depth levels deep, built without recursion."""
    schema: dict = {}
    for _ in range(depth):
        schema = {"items": schema}
    return schema


@pytest.mark.parametrize("schema, words", [
    ([1, 2], "must be a JSON object"),
    ("{}", "must be a JSON object"),
    (True, "must be a JSON object"),
    ({"type": "nonsense"}, "Invalid type: nonsense"),
    ({"$ref": "#/$defs/nowhere"}, "does not exist"),
    ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
    ({"type": "string", "pattern": "(("}, "unclosed group"),
    ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
    ({"type": "string", "format": "shoe-size"}, "Unknown format: shoe-size"),
    ({"type": "object", "dependentSchemas": {"a": {}}}, "dependentSchemas"),
    ({"type": "integer", "minimum": 5, "maximum": 2}, "minimum (5) is greater than maximum (2)"),
    ({"type": "number", "minimum": float("nan")}, "not valid JSON"),
    ({"enum": {1, 2}}, "not valid JSON"),
    ({"type": "object", "x-guidance": {"whitespace_flexible": True}}, "x-guidance"),
    ({"enum": [f"value{i}" for i in range(20_000)]}, "at most 65536 are accepted"),
    (nested(10_000), "nested too deeply"),
    (nested(500), "recursion limit"),
])
def test_bad_schemas_are_value_errors_quickly(schema, words):
    started = time.monotonic()
    with pytest.raises(ValueError, match=re.escape(words)):
        grammar_for_json_schema(schema)
    assert time.monotonic() - started < 2


def test_self_referencing_schema_cannot_start_a_row():
    circular = {"type": "object"}
    circular["properties"] = {"a": circular}
    with pytest.raises(ValueError, match="not valid JSON"):
        grammar_for_json_schema(circular)
    # A $ref to itself compiles but no output can complete it: the row is refused.
    grammar = grammar_for_json_schema({"$defs": {"a": {"$ref": "#/$defs/a"}},
                                       "$ref": "#/$defs/a"})
    with pytest.raises(ValueError, match="no output of this grammar"):
        MockGrammarRows().add(0, grammar, 100, seed=1)


def test_messages_are_trimmed():
    with pytest.raises(ValueError) as caught:
        grammar_for_json_schema({"type": "string", "pattern": "(" * 2000})
    assert len(str(caught.value)) < 400


def test_gbnf_and_lark_grammars():
    assert "start" in grammar_for_gbnf('root ::= "yes" | "no"')
    assert grammar_for_gbnf('start: "a"+')
    for text, words in (('root ::= (', "is not a valid GBNF grammar"), ("", "non-empty"),
                        ("root ::= missing", "Rule 'missing' not found"),
                        ("root ::= " + '"a" ' * 20_000, "at most 65536")):
        with pytest.raises(ValueError, match=re.escape(words)):
            grammar_for_gbnf(text)


def test_unsupported_keyword_is_named_not_ignored():
    with pytest.raises(ValueError, match="Unimplemented keys.*if"):
        grammar_for_json_schema({"type": "object", "if": {"required": ["a"]}, "then": {}})


def test_server_and_mock_modules_need_neither_torch_nor_numpy():
    code = ("import sys, inference_api.http.app, inference_api.sampling.closing, "
            "inference_api.mock.runner, inference_api.mock.text; "
            "print(sorted({'torch', 'numpy'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# --- the mock's byte chooser -----------------------------------------------------------------

def mock_output(rows: MockGrammarRows, grammar: str, max_tokens: int, seed: int) -> str:
    """Drive a mock row as its runner would: choose, accept, decode, until EOS or max_tokens."""
    rows.add(0, grammar, max_tokens, seed)
    detokenizer, text = ByteDetokenizer(), ""
    for step in range(max_tokens):
        token = rows.choose(0, step)
        accepted = rows.accept(0, token, max_tokens - step - 1)
        assert accepted.closing == () and accepted.error is None
        if token == MOCK_GRAMMAR_EOS:
            break
        text += detokenizer.push(token)
    rows.remove(0)
    return text


def test_mock_chooser_follows_the_schema_and_its_seed():
    rows, grammar = MockGrammarRows(), grammar_for_json_schema(PERSON)
    texts = [mock_output(rows, grammar, 256, seed) for seed in range(20)]
    for text in texts:
        check_instance(json.loads(text), PERSON)
    assert len(set(texts)) > 10
    assert mock_output(rows, grammar, 256, 7) == texts[7]


@pytest.mark.parametrize("slack", [0, 1, 5, 20])
def test_mock_output_completes_within_a_tight_budget(slack):
    rows, grammar = MockGrammarRows(), grammar_for_json_schema(PERSON)
    _, shortest = start_matcher(rows.tokenizer, BYTE_TOKENS, grammar, 1000)
    max_tokens = shortest + slack
    for seed in range(5):
        text = mock_output(rows, grammar, max_tokens, seed)
        assert len(text.encode()) <= max_tokens
        check_instance(json.loads(text), PERSON)


def test_too_small_max_tokens_is_refused_with_the_minimum():
    with pytest.raises(ValueError, match="max_tokens 12 is too small for this schema: at least "
                                         r"\d+ tokens are needed"):
        MockGrammarRows().add(0, grammar_for_json_schema(PERSON), 12, seed=0)


@pytest.mark.parametrize("schema", [
    {"type": "object"}, {"type": "array", "minItems": 2}, {"type": "string", "minLength": 4},
    {"type": "integer", "minimum": 7}, {"type": "number", "exclusiveMinimum": 0},
    {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
    {"type": "string", "format": "date-time"}, {"enum": ["x", {"a": [1]}, None]},
    {"type": "object", "properties": {"n": {"$ref": "#"}}},
    PERSON,
])
def test_closing_from_the_start_completes_each_schema(schema):
    tokenizer = byte_tokenizer()
    matcher, length = start_matcher(tokenizer, BYTE_TOKENS, grammar_for_json_schema(schema), 500)
    found = closing(matcher, tokenizer, BYTE_TOKENS, 500)
    assert found.complete and len(found.tokens) == length
    check_instance(json.loads(bytes(found.tokens)), schema)


def test_byte_detokenizer_is_utf8_safe():
    detokenizer = ByteDetokenizer()
    pieces = [detokenizer.push(b) for b in "é€😀".encode()]
    assert "".join(pieces) == "é€😀" and pieces[0] == "" and pieces[1] == "é"


def test_mock_text_maker_ends_constrained_rows_at_the_byte_eos():
    texts = MockTextMaker()
    grammar = grammar_for_json_schema({"type": "object"})
    constrained = SimpleNamespace(params=SamplingParams(grammar=grammar), prompt_text="hi")
    plain = SimpleNamespace(params=SamplingParams(), prompt_text="hi")
    state = texts(constrained)
    assert state.push(ord("{")) == ("{", None) and state.push(MOCK_GRAMMAR_EOS)[1] == "eos"
    assert texts(plain).push(MOCK_GRAMMAR_EOS) == ("hi256 ", None)


# --- the served model's tokenizer: masks and closings on random logits ------------------------

@pytest.fixture(scope="module")
def served():
    """The served model's tokenizer, EOS ids and logits width, without loading its weights."""
    from inference_api.config import Config
    from inference_api.model.files import (load_tokenizer, prepare_model_folder,
                                           read_model_info)

    config = Config()
    folder = prepare_model_folder(config.model_path, config.model_cache_dir)
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    return load_tokenizer(folder), tuple(read_model_info(folder)["eos_token_ids"]), vocab_size


def sample_rows(served, grammar: str, budgets: list[int], plain_rows: int = 2, seed: int = 0):
    """Drive one constrained row per budget beside plain rows, as the model runner would, on
    seeded random logits; returns each constrained row's tokens and how it ended ("eos",
    "length", or "closed" when a closing replaced its last token)."""
    import torch

    from inference_api.sampling.grammar_rows import GrammarRows

    tokenizer, eos_ids, vocab_size = served
    rows = GrammarRows(tokenizer.to_str(), eos_ids, vocab_size, len(budgets) + plain_rows)
    for row, budget in enumerate(budgets):
        rows.add(row, grammar, budget)
    generated = {row: [] for row in range(len(budgets))}
    ended: dict[int, str] = {}
    gen = torch.Generator().manual_seed(seed)
    plain = list(range(len(budgets), len(budgets) + plain_rows))
    while len(ended) < len(budgets):
        live = [row for row in generated if row not in ended]
        batch = plain[:1] + live + plain[1:]  # plain rows first and last: masks skip them
        logits = torch.randn(len(batch), vocab_size, generator=gen)
        before = logits.clone()
        rows.mask(batch, logits)
        for i, row in enumerate(batch):
            if row in plain:
                assert torch.equal(logits[i], before[i])
        for row, token in zip(batch, logits.argmax(-1).tolist()):
            if row in plain:
                continue
            out = generated[row]
            accepted = rows.accept(row, token, budgets[row] - len(out) - 1)
            assert accepted.error is None
            out += accepted.closing or [token]
            if accepted.closing:
                ended[row] = "closed"
            elif token in eos_ids:
                ended[row] = "eos"
            elif len(out) >= budgets[row]:
                ended[row] = "length"
    return tokenizer, generated, ended


@pytest.mark.slow
def test_masked_random_logits_give_valid_json(served):
    grammar = grammar_for_json_schema(PERSON)
    tokenizer, generated, ended = sample_rows(served, grammar, [300] * 20)
    eos_ids = served[1]
    for row, tokens in generated.items():
        assert len(tokens) <= 300
        check_instance(json.loads(tokenizer.decode([t for t in tokens if t not in eos_ids])),
                       PERSON)
    assert "eos" in ended.values()  # some rows end by themselves, not only by closing


@pytest.mark.slow
def test_outputs_cut_by_max_tokens_are_closed_valid(served):
    tokenizer, eos_ids, vocab_size = served
    grammar = grammar_for_json_schema(PERSON)
    from inference_api.sampling.grammar_rows import GrammarRows

    rows = GrammarRows(tokenizer.to_str(), eos_ids, vocab_size, 1)
    with pytest.raises(ValueError, match="max_tokens 12 is too small for this schema"):
        rows.add(0, grammar, 12)
    budgets = [34, 35, 37, 40, 50, 70] * 2  # 34: the shortest output of PERSON
    _, generated, ended = sample_rows(served, grammar, budgets, seed=1)
    for row, tokens in generated.items():
        assert len(tokens) <= budgets[row]
        check_instance(json.loads(tokenizer.decode([t for t in tokens if t not in eos_ids])),
                       PERSON)
    assert list(ended.values()).count("closed") >= len(budgets) // 2


@pytest.mark.slow
def test_any_json_object_and_gbnf_on_the_served_tokenizer(served):
    tokenizer, eos_ids, _ = served
    for grammar, check in ((grammar_for_response_format({"type": "json_object"}),
                            lambda text: isinstance(json.loads(text), dict)),
                           (grammar_for_gbnf('root ::= "yes" | "no" | "maybe " [0-9]+'),
                            lambda text: re.fullmatch(r"yes|no|maybe [0-9]+", text))):
        _, generated, _ = sample_rows(served, grammar, [16, 40, 100], seed=2)
        for tokens in generated.values():
            assert check(tokenizer.decode([t for t in tokens if t not in eos_ids]))
