"""Chat templates rendered as transformers renders them, without transformers: Jinja in a sandbox."""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The messages cannot be rendered with the model's template."""


def _raise(message: str):
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str | None, messages: list[dict], bos_token: str | None = None,
                eos_token: str | None = None, add_generation_prompt: bool = True,
                tools: list[dict] | None = None) -> str:
    """The prompt text for a conversation, ending where the assistant's answer begins (unless
    add_generation_prompt is false); tools go to templates with their own tool syntax."""
    if not template:
        raise ChatTemplateError("this model has no chat template; use the plain completion route")
    try:
        return _compile(template).render(messages=messages,
                                         add_generation_prompt=add_generation_prompt,
                                         bos_token=bos_token or "", eos_token=eos_token or "",
                                         tools=tools)
    except TemplateError as exc:
        raise ChatTemplateError(f"cannot apply the chat template: {exc}") from None
