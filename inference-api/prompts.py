"""Prompts: chat templates rendered as transformers does (without it), and tokenization."""
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
                eos_token: str | None = None) -> str:
    """The prompt text for a conversation, ending where the assistant's answer begins."""
    if not template:
        raise ChatTemplateError("this model has no chat template; use the plain completion route")
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=True,
                                         bos_token=bos_token or "", eos_token=eos_token or "")
    except TemplateError as exc:
        raise ChatTemplateError(f"cannot apply the chat template: {exc}") from None


class PromptEncoder:
    """Turns request text or chat messages into prompt token ids for the served model."""

    def __init__(self, info: dict):
        self.info = info
        if info.get("mock"):
            from .mock import MockTokenizer

            self._encode = lambda text, special: MockTokenizer().encode(text)
        else:
            from pathlib import Path

            from .model_store import load_tokenizer

            tokenizer = load_tokenizer(Path(info["folder"]))
            self._encode = lambda text, special: tokenizer.encode(
                text, add_special_tokens=special).ids

    def encode(self, text: str) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the model's tokenizer adds."""
        return self._encode(text, True)

    def chat_text(self, messages: list[dict]) -> str:
        """The prompt text of a conversation in the model's own chat template."""
        return render_chat(self.info.get("chat_template"), messages, self.info.get("bos_token"),
                           self.info.get("eos_token"))

    def encode_chat_text(self, text: str) -> list[int]:
        """Token ids of rendered chat text (the template already holds the special tokens)."""
        return self._encode(text, False)
