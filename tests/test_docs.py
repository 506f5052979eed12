"""The docs follow the code: every request field the server accepts is documented."""
from __future__ import annotations

import pytest
from pydantic import AliasChoices

from inference_api.http.anthropic.protocol import (CountTokensRequest, MessagesRequest,
                                                   OutputConfig, Tool, ToolChoice,
                                                   ToolResultBlock, ToolUseBlock)
from inference_api.http.native.protocol import GenerateRequest, InferenceRequest
from inference_api.http.openai.protocol import ChatRequest, CompletionRequest, StreamOptions
from inference_api.http.openai.protocol_messages import ChatMessage
from inference_api.http.solve.protocol import SolveRequest
from inference_api.http.responses.protocol import (FunctionCallItem, FunctionCallOutputItem,
                                                   FunctionTool, ResponsesRequest, TextConfig)
from processes import REPO

DOCS = REPO / "docs"


def accepted_names(model) -> set[str]:
    """Every JSON key a pydantic request model accepts, aliases included."""
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
    return names


def section(doc: str, heading: str) -> str:
    """The text under a "## " heading of a doc, down to the next heading of that level."""
    text = (DOCS / doc).read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


NATIVE_ROUTES = "Native routes: /inference and /predictions"
GENERATE = "POST /generate"
OPENAI_ROUTES = "OpenAI-compatible routes under /v1/"
RESPONSES = "OpenAI's Responses API: /v1/responses"
MESSAGES = "Anthropic's Messages API: /v1/messages"
SOLVE = "Task routes: /solve/math and /solve/coding"


@pytest.mark.parametrize("model,heading", [
    (InferenceRequest, NATIVE_ROUTES),
    (GenerateRequest, GENERATE),
    (CompletionRequest, OPENAI_ROUTES),
    (ChatRequest, OPENAI_ROUTES),
    (ChatMessage, OPENAI_ROUTES),
    (StreamOptions, OPENAI_ROUTES),
    (ResponsesRequest, RESPONSES),
    (TextConfig, RESPONSES),
    (FunctionTool, RESPONSES),
    (FunctionCallItem, RESPONSES),
    (FunctionCallOutputItem, RESPONSES),
    (MessagesRequest, MESSAGES),
    (CountTokensRequest, MESSAGES),
    (Tool, MESSAGES),
    (ToolChoice, MESSAGES),
    (ToolUseBlock, MESSAGES),
    (ToolResultBlock, MESSAGES),
    (OutputConfig, MESSAGES),
    (SolveRequest, SOLVE),
])
def test_every_accepted_field_is_documented(model, heading):
    text = section("api.md", heading)
    missing = sorted(name for name in accepted_names(model)
                     if f"`{name}`" not in text and f".{name}`" not in text)
    assert not missing, f"api.md's section {heading!r} does not document {missing}"


def test_api_doc_lists_every_error_status_the_native_routes_give():
    text = section("api.md", "Errors").split("\n### ")
    native = next(part for part in text if part.startswith("The native error shape"))
    for status in (400, 404, 405, 413, 503):
        assert f"| {status} |" in native
