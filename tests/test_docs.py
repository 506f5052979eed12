"""The docs follow the code: every request field the server accepts is documented."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from inference_api.http.native.generate import GenerateRequest
from inference_api.http.fields import InferenceRequest
from inference_api.http.openai.protocol import ChatMessage, ChatRequest, CompletionRequest, StreamOptions

DOCS = Path(__file__).resolve().parent.parent / "docs"


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


@pytest.mark.parametrize("model,doc", [
    (InferenceRequest, "frontend.md"),
    (GenerateRequest, "api.md"),
    (CompletionRequest, "api.md"),
    (ChatRequest, "api.md"),
    (ChatMessage, "api.md"),
    (StreamOptions, "api.md"),
])
def test_every_accepted_field_is_documented(model, doc):
    text = (DOCS / doc).read_text()
    missing = sorted(name for name in accepted_names(model)
                     if f"`{name}`" not in text and f".{name}`" not in text)
    assert not missing, f"{doc} does not document {missing}"


def test_frontend_doc_lists_every_error_status_the_native_routes_give():
    text = (DOCS / "frontend.md").read_text()
    for status in (400, 404, 405, 413, 503):
        assert f"| {status} |" in text
