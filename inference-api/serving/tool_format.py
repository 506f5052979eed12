"""Tool calling for chat templates without tool syntax (the "generic" format).

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
from dataclasses import dataclass

RESPONSE_FORM = {"type": "object", "properties": {"response": {"type": "string"}},
                 "required": ["response"], "additionalProperties": False}


@dataclass(frozen=True)
class ToolUse:
    """What a request allows the model to do with its tools.

    functions: those it may call now, each {"name", "description" (optional), "parameters" (a
    JSON schema of an object)}; none when tools are off. forced: the one function it must call;
    required: it must call at least one; neither: it may answer in words instead.
    """

    functions: tuple[dict, ...] = ()
    forced: str | None = None
    required: bool = False
    parallel: bool = True


def tool_prompt(use: ToolUse, listed: bool = True) -> str:
    """The system text describing the tools (unless the template lists them: listed=False) and
    the JSON answer the model must give."""
    if not use.functions:
        return ""
    lines = []
    if listed:
        lines += ["You can call these tools (functions). Each line gives a tool's name, "
                  "description and the JSON schema of its arguments:"]
        lines += [json.dumps(f, ensure_ascii=False) for f in use.functions] + [""]
    forced, must = use.forced, use.required
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
    lines.append("You may call several tools at once." if use.parallel and not forced else
                 "Call one tool at a time.")
    lines.append('The results of your calls come in the next turns, each as {"tool_response": '
                 '{"tool_call_id": ..., "name": ..., "content": ...}}.')
    return "\n".join(lines)


def answer_schema(use: ToolUse) -> dict | None:
    """The JSON schema the answer is held to; None when tools are off (no constraint)."""
    if not use.functions:
        return None
    defs: dict = {}
    calls = [{"type": "object",
              "properties": {"name": {"const": f["name"]},  # before arguments: streamed first
                             "arguments": _hoist_defs(f["name"], closed(f["parameters"]), defs)},
              "required": ["name", "arguments"], "additionalProperties": False}
             for f in use.functions]
    array = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
    if not use.parallel or use.forced:
        array["maxItems"] = 1
    schema = {"type": "object", "properties": {"tool_calls": array},
              "required": ["tool_calls"], "additionalProperties": False}
    if not (use.forced or use.required):
        schema = {"anyOf": [schema, RESPONSE_FORM]}
    return {**schema, "$defs": defs} if defs else schema


# Keys whose value maps names to schemas, and keys whose value is data rather than a schema.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_NOT_SCHEMAS = ("enum", "const", "default", "examples", "required")


def closed(schema):
    """The schema with every object that lists its properties closed to others, unless it says
    otherwise (additionalProperties or patternProperties), as OpenAI's strict mode holds them.

    Without it a small model fills the arguments with keys copied from the schema itself
    ({"city": "Paris", "type": "string"}), and calling the function with them fails.
    """
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            node[key] = {name: closed(sub) for name, sub in value.items()}
        else:
            node[key] = value if key in _NOT_SCHEMAS else closed(value)
    if isinstance(node.get("properties"), dict) and not (
            {"additionalProperties", "patternProperties", "unevaluatedProperties"} & set(node)):
        node["additionalProperties"] = False
    return node


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


def prepare_turns(turns: list[dict], use: ToolUse, tool_role: bool) -> list[dict]:
    """The turns for a template without tool syntax: history made plain, tools in the system."""
    return with_system_text(history_turns(turns, tool_role), tool_prompt(use))
