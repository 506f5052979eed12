"""A request's structured output as an llguidance grammar, compiled and checked in the server.

The checks need no tokenizer, so a bad schema or grammar is refused with a 400 before the
request reaches the backend, which matches the grammar against its tokens.
"""
from __future__ import annotations

import json
import re

import llguidance

from inference_api.quote import one_line

MAX_SOURCE_BYTES = 64 * 1024  # a schema's or grammar's text: bounds the work of compiling it
SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for json_schema.name
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
# No free whitespace: a small model could otherwise emit spaces or newlines until max_tokens.
# Not lenient: a keyword llguidance cannot enforce is refused rather than silently ignored.
# Given as overrides, so a schema's own "x-guidance" settings cannot turn these off.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ",
                "lenient": False}


def grammar_for_response_format(response_format: dict) -> str | None:
    """The grammar for OpenAI's response_format, or None for plain text.

    {"type": "json_object"} is any JSON object; {"type": "json_schema", "json_schema": {"name",
    "schema", "strict", "description"}} follows the schema. llama.cpp's forms are taken too: the
    name may be left out, and {"type": "json_object" or "json_schema", "schema": {...}} gives
    the schema beside the type. The schema is enforced whatever
    strict says: llguidance enforces every keyword it accepts and refuses the others, so
    strict=false gives the same output as strict=true.
    """
    if not isinstance(response_format, dict):
        raise ValueError("response_format must be an object")
    kind = response_format.get("type")
    if kind not in RESPONSE_FORMAT_TYPES:
        raise ValueError(f"response_format.type must be one of {', '.join(RESPONSE_FORMAT_TYPES)}")
    allowed = {"text": {"type"}, "json_object": {"type", "schema"},
               "json_schema": {"type", "json_schema", "schema"}}[kind]
    _refuse_unknown("response_format", response_format, allowed)
    if kind == "text":
        return None
    if "schema" in response_format:  # llama.cpp's form: the schema beside the type
        if kind == "json_schema" and "json_schema" in response_format:
            raise ValueError("response_format: give the schema in json_schema.schema or in "
                             "schema, not both")
        return grammar_for_json_schema(response_format["schema"], "response_format.schema")
    if kind == "json_object":
        return grammar_for_json_schema({"type": "object"})
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise ValueError("response_format.json_schema must be an object with schema (and name)")
    _refuse_unknown("response_format.json_schema", spec,
                    {"name", "schema", "strict", "description"})
    name = spec.get("name")  # OpenAI requires it; llama.cpp and vLLM do without
    if name is not None and not (isinstance(name, str) and SCHEMA_NAME.fullmatch(name)):
        raise ValueError("response_format.json_schema.name must be 1 to 64 letters, digits, "
                         "_ or -")
    if spec.get("strict") not in (None, True, False):
        raise ValueError("response_format.json_schema.strict must be true, false or null")
    if not isinstance(spec.get("description", ""), str):
        raise ValueError("response_format.json_schema.description must be a string")
    if "schema" not in spec:
        raise ValueError("response_format.json_schema.schema is required")
    return grammar_for_json_schema(spec["schema"], "response_format.json_schema.schema")


def grammar_for_json_schema(schema, where: str = "json_schema") -> str:
    """The checked grammar of a JSON schema (a JSON object); ValueError naming what is wrong."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a JSON object (a JSON schema)")
    if "x-guidance" in schema:
        raise ValueError(f"{where}: the x-guidance keyword is not accepted")
    try:
        text = json.dumps(schema, allow_nan=False)
    except RecursionError:
        raise ValueError(f"{where} is nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} is not valid JSON: {one_line(str(exc))}") from None
    _check_size(where, text)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, overrides=JSON_OPTIONS)
    except ValueError as exc:
        raise ValueError(f"{where} is not a valid JSON schema: {one_line(str(exc))}") from None
    check_grammar(grammar, where)
    return grammar


def grammar_for_gbnf(text: str, where: str = "grammar") -> str:
    """The checked grammar of a llama.cpp GBNF grammar (Lark is accepted too, as llguidance's)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where} must be a non-empty GBNF grammar")
    _check_size(where, text)
    try:
        grammar = llguidance.grammar_from("gbnf", text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{where} is not a valid GBNF grammar: {one_line(str(exc))}") from None
    check_grammar(grammar, where)
    return grammar


def grammar_for_regex(pattern: str, where: str = "regex") -> str:
    """The checked grammar of a regular expression (Rust's regex syntax, as llguidance reads it);
    the whole answer must match it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where} must be a non-empty regular expression")
    _check_size(where, pattern)
    try:
        grammar = llguidance.grammar_from("regex", pattern)
    except ValueError as exc:
        raise ValueError(f"{where} is not a valid regular expression: {one_line(str(exc))}"
                         ) from None
    check_grammar(grammar, where)
    return grammar


def grammar_for_choice(choices, where: str = "choice") -> str:
    """The checked grammar of a list of strings: the answer is one of them, as written (no
    quotes), as vLLM's guided_choice gives it."""
    if not (isinstance(choices, list) and choices and all(
            isinstance(c, str) and c for c in choices)):
        raise ValueError(f"{where} must be a non-empty list of non-empty strings")
    text = json.dumps(choices)
    _check_size(where, text)
    grammar = llguidance.grammar_from("choice", text)
    check_grammar(grammar, where)
    return grammar


def check_grammar(grammar: str, where: str = "grammar") -> None:
    """ValueError with llguidance's message unless the grammar compiles (no tokenizer needed)."""
    try:
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as exc:  # the binding raises on input it cannot even read
        failed, messages = True, [str(exc)]
    if failed:
        raise ValueError(f"{where} is not valid: {one_line(messages[0] if messages else '?')}")


def _refuse_unknown(where: str, given: dict, allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{where} has unknown field {unknown[0]!r}; allowed: "
                         f"{', '.join(sorted(allowed))}")


def _check_size(where: str, text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise ValueError(f"{where} is {size} bytes: at most {MAX_SOURCE_BYTES} are accepted")
