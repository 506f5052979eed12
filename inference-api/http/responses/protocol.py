"""The request body of POST /v1/responses, and its input as the chat template's turns.

input is a string (one user message) or a list of items: messages (role and content, "type":
"message" optional), function calls the model made (function_call) and their results
(function_call_output). Items are kept as plain dicts in one form (items()), so that a stored
conversation and a new request's input read the same way (turns_of).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictBool, Tag,
                      field_validator, model_validator)

from inference_api.http.fields import REQUEST_CONFIG, Float, Int, TopP, drop_nulls
from inference_api.quote import quote
from inference_api.serving.tool_format import ToolUse

MAX_COUNT = 2**31 - 1
MAX_TOOLS = 128
MAX_ITEMS = 4096
# Items ignore fields they do not need: clients send back the output items of an answer as they
# got them (id, status, annotations, logprobs).
LENIENT = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(BaseModel):
    """A part of a message's content: input_text (user's), output_text (assistant's) or text."""

    model_config = LENIENT

    type: Literal["input_text", "output_text", "text"]
    text: str


def _text_parts(content):
    """Content given as a string is one text part (a before-validator)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _joined(parts: list[TextPart]) -> str:
    return "\n".join(part.text for part in parts)


TextParts = Annotated[list[TextPart], BeforeValidator(_text_parts)]


class MessageItem(BaseModel):
    """A message of the conversation."""

    model_config = LENIENT

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: TextParts


class FunctionCallItem(BaseModel):
    """A function call the model made; call_id ties it to its output."""

    model_config = LENIENT

    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    """The result of a function call."""

    model_config = LENIENT

    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    output: TextParts


def _item_kind(item) -> str | None:
    if isinstance(item, dict):
        return item.get("type", "message")
    return getattr(item, "type", None)


Item = Annotated[Union[Annotated[MessageItem, Tag("message")],
                       Annotated[FunctionCallItem, Tag("function_call")],
                       Annotated[FunctionCallOutputItem, Tag("function_call_output")]],
                 Discriminator(_item_kind)]


class FunctionTool(BaseModel):
    """{"type": "function", "name", "description", "parameters", "strict"}."""

    model_config = REQUEST_CONFIG

    type: Literal["function"]
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: StrictBool | None = None  # the grammar always holds the arguments to the schema

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, schema: dict) -> dict:
        if schema.get("type", "object") != "object":
            raise ValueError("must be a JSON schema of type \"object\"")
        return {"type": "object", **schema}


class NamedFunction(BaseModel):
    """tool_choice naming the one function the model must call."""

    model_config = REQUEST_CONFIG

    type: Literal["function"]
    name: str


class TextConfig(BaseModel):
    """text: format is response_format's {"type": "text" | "json_object" | "json_schema", ...}
    flattened (name, schema, strict, description beside the type)."""

    model_config = REQUEST_CONFIG

    format: dict | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted; changes nothing


class ResponsesRequest(BaseModel):
    """POST /v1/responses."""

    model_config = REQUEST_CONFIG

    model: str
    input: list[Item] = Field(min_length=1, max_length=MAX_ITEMS)
    instructions: str | None = None
    max_output_tokens: Int | None = Field(None, ge=1, le=MAX_COUNT)
    temperature: Float = Field(1.0, ge=0, le=2)
    top_p: TopP = 1.0
    tools: list[FunctionTool] = Field(default_factory=list, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | NamedFunction = "auto"
    parallel_tool_calls: StrictBool = True
    text: TextConfig | None = None
    stream: StrictBool = False
    store: StrictBool = True
    previous_response_id: Annotated[str, Field(max_length=256)] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    # Accepted and not used: they ask for nothing this server could do otherwise.
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None  # the prefix cache finds shared prefixes by itself
    service_tier: Literal["auto", "default"] | None = None
    truncation: Literal["disabled"] | None = None
    background: Literal[False] | None = None
    include: list[str] | None = Field(None, max_length=0)
    stream_options: dict | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, body):
        return drop_nulls(body)

    @field_validator("input", mode="before")
    @classmethod
    def _text_is_a_user_message(cls, value):
        return [{"role": "user", "content": value}] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tools_named_once_and_chosen_among(self):
        names = [t.name for t in self.tools]
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise ValueError(f"tools: the function name {quote(twice)} is given twice")
        choice = self.tool_choice
        if choice == "required" and not self.tools:
            raise ValueError("tool_choice \"required\" needs tools")
        if isinstance(choice, NamedFunction) and choice.name not in names:
            raise ValueError(f"tool_choice names the function {quote(choice.name)}, which is "
                             f"not in tools")
        return self

    def items(self) -> list[dict]:
        """The input as plain items (module docstring)."""
        plain = []
        for item in self.input:
            if isinstance(item, MessageItem):
                plain.append({"type": "message", "role": item.role,
                              "content": _joined(item.content)})
            elif isinstance(item, FunctionCallItem):
                plain.append(item.model_dump(include={"type", "call_id", "name", "arguments"}))
            else:
                plain.append({"type": "function_call_output", "call_id": item.call_id,
                              "output": _joined(item.output)})
        return plain

    def tool_use(self) -> ToolUse:
        """What the model may do with the tools under tool_choice."""
        choice = self.tool_choice
        if choice == "none" or not self.tools:
            return ToolUse(parallel=self.parallel_tool_calls)
        forced = choice.name if isinstance(choice, NamedFunction) else None
        functions = tuple(t.model_dump(exclude_none=True, exclude={"type", "strict"})
                          for t in self.tools if forced in (None, t.name))
        return ToolUse(functions, forced, choice == "required", self.parallel_tool_calls)


def turns_of(instructions: str | None, items: list[dict]) -> list[dict]:
    """The chat template's turns of plain items, after the instructions as the system turn.

    A function call joins the assistant turn before it (or starts one); its output is a turn of
    role tool.
    """
    turns = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            turns.append({"role": role, "content": item["content"]})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if not (turns and turns[-1]["role"] == "assistant"):
                turns.append({"role": "assistant", "content": ""})
            turns[-1].setdefault("tool_calls", []).append(call)
        else:
            turns.append({"role": "tool", "tool_call_id": item["call_id"],
                          "content": item["output"]})
    return turns


def output_items(output: list[dict]) -> list[dict]:
    """A response's output as plain items, for the conversation a stored response ends."""
    plain = []
    for item in output:
        if item["type"] == "message":
            plain.append({"type": "message", "role": "assistant", "content": "".join(
                part["text"] for part in item["content"])})
        else:
            plain.append({key: item[key] for key in ("type", "call_id", "name", "arguments")})
    return plain

