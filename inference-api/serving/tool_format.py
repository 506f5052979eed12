"""OpenAI tool calling for chat templates without tool syntax (the "generic" format).

The tools are described in the system message (tool_prompt) and the model answers with exactly
one JSON object, held to answer_schema by the grammar engine, in one of two forms:

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    {"response": "It is sunny in Paris."}

In the history, an assistant turn with tool_calls becomes the same JSON (after its text, if it
has any), and a tool result becomes a turn of role "tool" when the template renders that role,
else a user turn, holding

    {"tool_response": {"tool_call_id": "call_1", "name": "get_weather", "content": "22 C"}}

Templates whose own syntax covers tools (they read `tools`) are given the tools instead.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import (BaseModel, Field, PlainValidator, StrictBool, ValidationError,
                      field_validator)

from inference_api.quote import quote
from inference_api.http.fields import REQUEST_CONFIG

MAX_TOOLS = 128  # OpenAI's limit
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}
RESPONSE_FORM = {"type": "object", "properties": {"response": {"type": "string"}},
                 "required": ["response"], "additionalProperties": False}


class FunctionDef(BaseModel):
    """A function the model may call: its name, what it does, the JSON schema of its arguments."""

    model_config = REQUEST_CONFIG

    name: str
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    strict: StrictBool | None = None  # the grammar always holds the arguments to the schema

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"the function name {quote(name)} must be 1 to 64 letters, digits, "
                             f"underscores or dashes")
        return name

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, schema: dict) -> dict:
        if schema.get("type", "object") != "object":
            raise ValueError(f"must be a JSON schema of type \"object\", not of type "
                             f"{quote(schema['type'])}")
        return {"type": "object", **schema}  # a schema without a type would allow any value


class Tool(BaseModel):
    """One entry of tools."""

    model_config = REQUEST_CONFIG

    type: Literal["function"]
    function: FunctionDef


class FunctionName(BaseModel):
    """The function of a named tool_choice."""

    model_config = REQUEST_CONFIG

    name: str


class NamedToolChoice(BaseModel):
    """tool_choice naming the one function the model must call."""

    model_config = REQUEST_CONFIG

    type: Literal["function"]
    function: FunctionName


def _tool_choice(choice):
    # One message for any wrong shape: the union's own errors would list every alternative.
    if isinstance(choice, NamedToolChoice) or choice in ("auto", "none", "required"):
        return choice
    try:
        return NamedToolChoice.model_validate(choice)
    except ValidationError:
        raise ValueError(f'must be "auto", "none", "required" or {{"type": "function", '
                         f'"function": {{"name": ...}}}}, not {quote(choice)}') from None


ToolChoice = Annotated[Literal["auto", "none", "required"] | NamedToolChoice,
                       PlainValidator(_tool_choice)]


class CalledFunction(BaseModel):
    """The function of a tool call in the history: its name and its arguments as JSON text."""

    model_config = REQUEST_CONFIG

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A tool call of an assistant message in the history, as the answer gave it."""

    model_config = REQUEST_CONFIG

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ToolFields(BaseModel):
    """The tool fields of a chat request; a mixin for the request model."""

    model_config = REQUEST_CONFIG

    tools: list[Tool] = Field(default_factory=list, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool = True

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, tools: list[Tool]) -> list[Tool]:
        names = [t.function.name for t in tools]
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise ValueError(f"the function name {quote(twice)} is given twice")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _known_tool(cls, choice, info):
        if "tools" not in info.data:
            return choice  # tools is invalid, and said so
        names = [t.function.name for t in info.data["tools"]]
        if choice in ("auto", "none") or choice is None:
            return choice  # harmless without tools: clients send "auto" always
        if not names:
            what = quote(choice) if isinstance(choice, str) else \
                f"naming the function {quote(choice.function.name)}"
            raise ValueError(f"{what} is only allowed when tools are given")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"names the function {quote(choice.function.name)}, which is not "
                             f"in tools")
        return choice

    @property
    def effective_tool_choice(self) -> str | NamedToolChoice:
        """tool_choice, defaulting as OpenAI does: "auto" with tools, else "none"."""
        return "none" if not self.tools else self.tool_choice or "auto"


def _forced(choice) -> str | None:
    return choice.function.name if isinstance(choice, NamedToolChoice) else None


def _active(tools: list[Tool], choice) -> list[FunctionDef]:
    """The functions the model may call under tool_choice (none when it is "none")."""
    if choice == "none":
        return []
    forced = _forced(choice)
    return [t.function for t in tools if forced in (None, t.function.name)]


def tool_prompt(tools: list[Tool], tool_choice, parallel: bool, listed: bool = True) -> str:
    """The system text describing the tools (unless the template lists them: listed=False) and
    the JSON answer the model must give."""
    functions = _active(tools, tool_choice)
    if not functions:
        return ""
    lines = []
    if listed:
        lines += ["You can call these tools (functions). Each line gives a tool's name, "
                  "description and the JSON schema of its arguments:"]
        lines += [json.dumps(f.model_dump(exclude_none=True, exclude={"strict"}),
                             ensure_ascii=False) for f in functions] + [""]
    forced, must = _forced(tool_choice), tool_choice == "required"
    if forced:
        lines.append(f"You must call the tool {json.dumps(forced)}.")
    elif must:
        lines.append("You must call at least one tool.")
    calls_form = '{"tool_calls": [{"name": "<tool name>", "arguments": {<its arguments>}}]}'
    if forced or must:
        lines += ["Answer with exactly one JSON object and nothing else, in this form:", calls_form]
    else:
        lines += ["Answer with exactly one JSON object and nothing else, in one of these forms:",
                  f"- to call tools: {calls_form}",
                  '- to answer the user directly: {"response": "<your answer>"}']
    lines.append("You may call several tools at once." if parallel and not forced else
                 "Call one tool at a time.")
    lines.append('The results of your calls come in the next turns, each as {"tool_response": '
                 '{"tool_call_id": ..., "name": ..., "content": ...}}.')
    return "\n".join(lines)


def answer_schema(tools: list[Tool], tool_choice, parallel: bool) -> dict | None:
    """The JSON schema the answer is held to; None when tools are off (no constraint)."""
    functions = _active(tools, tool_choice)
    if not functions:
        return None
    defs: dict = {}
    calls = [{"type": "object",
              "properties": {"name": {"const": f.name},  # before arguments: streamed first
                             "arguments": _hoist_defs(f.name, f.parameters, defs)},
              "required": ["name", "arguments"], "additionalProperties": False}
             for f in functions]
    array = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
    if not parallel or _forced(tool_choice):
        array["maxItems"] = 1
    schema = {"type": "object", "properties": {"tool_calls": array},
              "required": ["tool_calls"], "additionalProperties": False}
    if tool_choice == "auto":
        schema = {"anyOf": [schema, RESPONSE_FORM]}
    return {**schema, "$defs": defs} if defs else schema


def _hoist_defs(name: str, parameters: dict, defs: dict) -> dict:
    """The parameters with their $defs moved to the root: their refs point from the root."""
    local = {**parameters.get("definitions", {}), **parameters.get("$defs", {})}
    if not local:
        return parameters

    def moved(node):
        if isinstance(node, list):
            return [moved(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = {k: moved(v) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str):
            node["$ref"] = re.sub(r"^#/(\$defs|definitions)/", f"#/$defs/{name}.", ref)
        return node

    for key, value in local.items():
        defs[f"{name}.{key}"] = moved(value)
    return moved({k: v for k, v in parameters.items() if k not in ("$defs", "definitions")})


def template_supports_tools(template: str | None) -> bool:
    """True when a chat template has its own tool syntax (it reads `tools`)."""
    return bool(template and re.search(r"\btools\b", template))


def renders_tool_role(render) -> bool:
    """True when render (messages -> prompt text) renders a turn of role "tool"."""
    mark = "tool-result-probe"
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
             {"role": "tool", "content": mark}]
    try:
        return mark in render(probe)
    except Exception:  # noqa: BLE001 - a template that fails on the role does not take it
        return False


def history_turns(turns: list[dict], tool_role: bool) -> list[dict]:
    """Turns with tool calls and tool results rewritten as plain text turns (module docstring)."""
    names, plain = {}, []
    for turn in turns:
        if turn["role"] == "assistant" and turn.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": _json_or_text(
                c["function"]["arguments"])} for c in turn["tool_calls"]]
            names.update((c["id"], c["function"]["name"]) for c in turn["tool_calls"])
            text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
            plain.append({"role": "assistant", "content": "\n".join(
                filter(None, [turn.get("content"), text]))})
        elif turn["role"] == "tool":
            call_id = turn.get("tool_call_id")
            result = {"tool_call_id": call_id, "name": names.get(call_id, turn.get("name")),
                      "content": turn.get("content") or ""}
            plain.append({"role": "tool" if tool_role else "user", "content": json.dumps(
                {"tool_response": {k: v for k, v in result.items() if v is not None}},
                ensure_ascii=False)})
        else:
            plain.append({"role": turn["role"], "content": turn.get("content") or ""})
    return plain


def template_turns(turns: list[dict]) -> list[dict]:
    """Turns for a template with its own tool syntax: call arguments as objects, as it reads."""
    return [{**turn, "tool_calls": [_with_object_arguments(c) for c in turn["tool_calls"]]}
            if turn.get("tool_calls") else turn for turn in turns]


def _with_object_arguments(call: dict) -> dict:
    arguments = _json_or_text(call["function"]["arguments"])
    return {**call, "function": {**call["function"], "arguments": arguments}}


def _json_or_text(arguments):
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments  # as the client sent it: the model sees what was called


def with_system_text(turns: list[dict], text: str) -> list[dict]:
    """Turns with text added to the first system message, or in a new one before them."""
    if not text:
        return turns
    if turns and turns[0]["role"] == "system":
        first = "\n\n".join(filter(None, [turns[0]["content"], text]))
        return [{**turns[0], "content": first}, *turns[1:]]
    return [{"role": "system", "content": text}, *turns]


def prepare_turns(turns: list[dict], tools: list[Tool], tool_choice, parallel: bool,
                  tool_role: bool) -> list[dict]:
    """The turns for a template without tool syntax: history made plain, tools in the system."""
    return with_system_text(history_turns(turns, tool_role),
                            tool_prompt(tools, tool_choice, parallel))
