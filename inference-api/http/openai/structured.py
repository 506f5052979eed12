"""A request's structured output, in whichever of the peers' fields it comes, as one grammar.

OpenAI's response_format, llama.cpp's json_schema and grammar (on /v1/completions), vLLM's
structured_outputs ({"json" | "regex" | "choice" | "grammar" | "json_object": ...}) and its older
guided_json, guided_regex, guided_choice and guided_grammar. A request gives at most one; a bad
schema, regular expression or grammar is a 400 naming the field.
"""
from __future__ import annotations

import json

from inference_api.http.errors import ApiError
from inference_api.serving.grammars import (grammar_for_choice, grammar_for_gbnf,
                                            grammar_for_json_schema, grammar_for_regex,
                                            grammar_for_response_format)

# vLLM's options of structured_outputs that change nothing here: whitespace is never free (see
# grammars.JSON_OPTIONS) and there is no other backend to fall back to.
NO_OP_OPTIONS = ("disable_fallback", "disable_any_whitespace", "disable_additional_properties",
                 "whitespace_pattern")


def _json_schema(value, where: str) -> str:
    if isinstance(value, str):  # vLLM takes the schema as JSON text too
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{where} must be a JSON schema (an object, or its JSON text)"
                             ) from None
    return grammar_for_json_schema(value, where)


def _json_object(value, where: str) -> str | None:
    if value is not True and value is not False:
        raise ValueError(f"{where} must be true or false")
    return grammar_for_json_schema({"type": "object"}, where) if value else None


# Each field: how its value becomes a grammar (None: free text).
COMPILERS = {
    "response_format": lambda value, where: grammar_for_response_format(value),
    "json_schema": grammar_for_json_schema,
    "grammar": grammar_for_gbnf,
    "guided_json": _json_schema,
    "guided_regex": grammar_for_regex,
    "guided_choice": grammar_for_choice,
    "guided_grammar": grammar_for_gbnf,
}
STRUCTURED_OUTPUTS = {"json": _json_schema, "regex": grammar_for_regex,
                      "choice": grammar_for_choice, "grammar": grammar_for_gbnf,
                      "json_object": _json_object}


def request_grammar(body) -> str | None:
    """The grammar the request's structured output asks for (None for free text)."""
    given = [name for name in (*COMPILERS, "structured_outputs")
             if getattr(body, name, None) is not None]
    if len(given) > 1:
        raise ApiError(400, f"give one of {', '.join(given)}, not several", param=given[1])
    if not given:
        return None
    name = given[0]
    value = getattr(body, name)
    try:
        if name == "structured_outputs":
            return _structured_outputs(value)
        return COMPILERS[name](value, name)
    except ValueError as exc:  # the message names the field
        raise ApiError(400, str(exc), param=name) from None


def _structured_outputs(spec: dict) -> str | None:
    unknown = sorted(set(spec) - set(STRUCTURED_OUTPUTS) - set(NO_OP_OPTIONS))
    if unknown:
        raise ValueError(f"structured_outputs has unknown field {unknown[0]!r}; allowed: "
                         f"{', '.join(STRUCTURED_OUTPUTS)}")
    given = [key for key in STRUCTURED_OUTPUTS if spec.get(key) is not None]
    if len(given) > 1:
        raise ValueError(f"structured_outputs: give one of {', '.join(given)}, not several")
    if not given:
        return None
    key = given[0]
    return STRUCTURED_OUTPUTS[key](spec[key], f"structured_outputs.{key}")
