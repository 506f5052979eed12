"""What a conversation is made of in OpenAI's chat API: messages, tool definitions, tool choice
and tool calls, as pydantic models (a tool call has one shape, in a request's history and in an
answer alike)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, StrictBool, ValidationError,
                      field_validator, model_validator)

from inference_api.http.fields import REQUEST_CONFIG, tool_name
from inference_api.quote import quote
from inference_api.serving.tool_format import ToolUse

MAX_TOOLS = 128  # OpenAI's limit
MAX_ROLE_CHARS = 64  # a custom role is a word such as "ipython" or "my-custom-role"


EMPTY_PARAMETERS = {"type": "object", "properties": {}}
FunctionName = tool_name("function")


class FunctionDef(BaseModel):
    """A function the model may call: its name, what it does, the JSON schema of its arguments."""

    model_config = REQUEST_CONFIG

    name: FunctionName
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    strict: StrictBool | None = None  # the grammar always holds the arguments to the schema

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
    """The function a tool call names, and its arguments as JSON text."""

    model_config = REQUEST_CONFIG

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A tool call: in an answer, and in an assistant message of the history as the answer gave
    it."""

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

    def tool_use(self) -> ToolUse:
        """What the model may do with the tools under tool_choice (nothing when it is "none")."""
        choice = self.effective_tool_choice
        if choice == "none":
            return ToolUse(parallel=self.parallel_tool_calls)
        forced = choice.function.name if isinstance(choice, NamedToolChoice) else None
        functions = tuple(t.function.model_dump(exclude_none=True, exclude={"strict"})
                          for t in self.tools if forced in (None, t.function.name))
        return ToolUse(functions, forced, choice == "required", self.parallel_tool_calls)


class ChatMessage(BaseModel):
    """One turn: the content as a string or a list of {"type": "text", "text": ...} parts.

    An assistant turn may hold tool_calls instead of content; a tool turn answers one of them.
    As vLLM does, fields a message does not need are ignored (clients echo back what answers
    carried: refusal, reasoning_content, ...), and a role other than OpenAI's is passed to the
    chat template as it is, for templates that know it.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    role: Annotated[str, Field(min_length=1, max_length=MAX_ROLE_CHARS)]
    content: str | None = None
    name: str | None = None  # accepted for compatibility; chat templates do not use it
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_or_calls(self):
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages may have tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only in an assistant message "
                             "with tool_calls)")
        return self

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, content):
        if not isinstance(content, list):
            return content
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or set(part) != {
                    "type", "text"} or not isinstance(part["text"], str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                                 f"supported, not {quote(kind)}")
            texts.append(part["text"])
        return "\n".join(texts)

    def turn(self) -> dict:
        """The message as the chat template takes it ("developer" is the newer "system")."""
        turn = {"role": "system" if self.role == "developer" else self.role,
                "content": self.content}
        if self.tool_calls:
            turn["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        return turn
