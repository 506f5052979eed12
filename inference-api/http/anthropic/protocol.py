"""Request bodies of Anthropic's Messages API, and what they become: template turns and tools.

Content is a string or a list of blocks: text, tool_use (in assistant turns) and tool_result
(in user turns). Other blocks (images, documents, thinking) are refused by name.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator,
                      model_validator)

from inference_api.http.fields import (REQUEST_CONFIG, Float, Int, StopList, TopP, drop_nulls,
                                        tool_name)
from inference_api.quote import quote
from inference_api.sampling_params import MAX_TOP_K
from inference_api.serving.tool_format import ToolUse

MAX_COUNT = 2**31 - 1
MAX_TOOLS = 128
ToolName = tool_name("tool")


# Blocks and messages ignore fields they do not need: clients send back the blocks of an answer
# as they got them, with fields of the newest API (caller, citations, ...).
LENIENT = ConfigDict(extra="ignore", allow_inf_nan=False)


class _Block(BaseModel):
    model_config = LENIENT

    cache_control: dict | None = None  # prompt caching hints: the prefix cache needs none


class TextBlock(_Block):
    """{"type": "text", "text": ...}."""

    type: Literal["text"]
    text: str


def _text_blocks(content):
    """Content given as a string is one text block (a before-validator)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _joined(blocks: list[TextBlock]) -> str:
    return "\n".join(block.text for block in blocks)


TextBlocks = Annotated[list[TextBlock], BeforeValidator(_text_blocks)]


class ToolUseBlock(_Block):
    """A call the assistant made: its id, the tool's name and its input."""

    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1, max_length=256)]
    name: str
    input: dict


class ToolResultBlock(_Block):
    """The result of a call, in a user turn."""

    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1, max_length=256)]
    content: TextBlocks = Field(default_factory=list)
    is_error: StrictBool | None = None

    def text(self) -> str:
        """The result as text (an error's marked as one)."""
        text = _joined(self.content)
        return f"Error: {text}" if self.is_error else text


Block = Annotated[Union[TextBlock, ToolUseBlock, ToolResultBlock], Field(discriminator="type")]


class Message(BaseModel):
    """One turn of the conversation."""

    model_config = LENIENT

    role: Literal["user", "assistant"]
    content: Annotated[list[Block], BeforeValidator(_text_blocks)]

    @model_validator(mode="after")
    def _blocks_in_their_turns(self):
        blocks = self.content
        if self.role == "user" and any(isinstance(b, ToolUseBlock) for b in blocks):
            raise ValueError("tool_use blocks belong in assistant messages")
        if self.role == "assistant" and any(isinstance(b, ToolResultBlock) for b in blocks):
            raise ValueError("tool_result blocks belong in user messages")
        return self

    def turns(self) -> list[dict]:
        """The template's turns of this message: tool results first, as turns of role tool."""
        text = "\n".join(b.text for b in self.content if isinstance(b, TextBlock))
        results = [{"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()}
                   for b in self.content if isinstance(b, ToolResultBlock)]
        calls = [{"id": b.id, "type": "function", "function": {
            "name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}}
            for b in self.content if isinstance(b, ToolUseBlock)]
        turn = {"role": self.role, "content": text}
        if calls:
            turn["tool_calls"] = calls
        return results + ([turn] if text or calls or not results else [])


class Tool(BaseModel):
    """A tool the model may call: name, description, the JSON schema of its input."""

    model_config = REQUEST_CONFIG

    type: Literal["custom"] | None = None
    name: ToolName
    description: str | None = None
    input_schema: dict
    cache_control: dict | None = None

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, schema: dict) -> dict:
        if schema.get("type") != "object":
            raise ValueError("must be a JSON schema of type \"object\"")
        return schema


class ToolChoice(BaseModel):
    """auto (may call), any (must call one), tool (must call `name`), none (must not)."""

    model_config = REQUEST_CONFIG

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: StrictBool = False

    @model_validator(mode="after")
    def _name_with_tool(self):
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("name is required with type \"tool\", and only with it")
        return self


class OutputFormat(BaseModel):
    """{"type": "json_schema", "schema": {...}}: the answer's text follows the schema."""

    model_config = REQUEST_CONFIG

    type: Literal["json_schema"]
    schema_: dict = Field(alias="schema")


class OutputConfig(BaseModel):
    """output_config: a structured output's format; effort is accepted and changes nothing."""

    model_config = REQUEST_CONFIG

    format: OutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class _Conversation(BaseModel):
    """What POST /v1/messages and /v1/messages/count_tokens share."""

    model_config = REQUEST_CONFIG

    model: str
    messages: list[Message] = Field(min_length=1)
    system: TextBlocks | None = None
    tools: list[Tool] = Field(default_factory=list, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: dict | None = None  # only {"type": "disabled"}: there is no extended thinking

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, body):
        return drop_nulls(body)

    @field_validator("thinking")
    @classmethod
    def _no_thinking(cls, thinking):
        if thinking != {"type": "disabled"}:
            raise ValueError("extended thinking is not supported: send {\"type\": \"disabled\"} "
                             "or leave it out")
        return thinking

    @model_validator(mode="after")
    def _tools_named_once_and_chosen_among(self):
        names = [t.name for t in self.tools]
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise ValueError(f"tools: the name {quote(twice)} is given twice")
        choice = self.tool_choice
        if choice and choice.type in ("any", "tool") and not self.tools:
            raise ValueError(f"tool_choice {choice.type!r} needs tools")
        if choice and choice.type == "tool" and choice.name not in names:
            raise ValueError(f"tool_choice names the tool {quote(choice.name)}, which is not in "
                             f"tools")
        return self

    def turns(self) -> list[dict]:
        """The conversation as the chat template's turns, the system text first."""
        system = _joined(self.system) if self.system else ""
        head = [{"role": "system", "content": system}] if system else []
        return head + [turn for message in self.messages for turn in message.turns()]

    def tool_use(self) -> ToolUse:
        """What the model may do with the tools under tool_choice (auto by default)."""
        choice = self.tool_choice or ToolChoice(type="auto")
        parallel = not choice.disable_parallel_tool_use
        if choice.type == "none" or not self.tools:
            return ToolUse(parallel=parallel)
        functions = tuple({"name": t.name, "parameters": t.input_schema,
                           **({"description": t.description} if t.description else {})}
                          for t in self.tools if choice.type != "tool" or t.name == choice.name)
        forced = choice.name if choice.type == "tool" else None
        return ToolUse(functions, forced, choice.type == "any", parallel)


class MessagesRequest(_Conversation):
    """POST /v1/messages."""

    max_tokens: Int = Field(ge=1, le=MAX_COUNT)
    stop_sequences: StopList = Field(default_factory=list)
    temperature: Float = Field(1.0, ge=0, le=1)  # Anthropic's range
    top_p: TopP = 1.0
    top_k: Int = Field(0, ge=0, le=MAX_TOP_K)  # 0: off
    stream: StrictBool = False
    output_config: OutputConfig | None = None
    metadata: dict | None = None  # {"user_id": ...}: accepted and not used
    service_tier: Literal["auto", "standard_only"] | None = None  # one tier here


class CountTokensRequest(_Conversation):
    """POST /v1/messages/count_tokens."""
