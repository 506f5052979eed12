"""Prompts: chat templates rendered as transformers does (without it), and tokenization."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inference_api.mock.runner import MOCK_VOCAB_SIZE, MockTokenizer
from inference_api.model.files import load_tokenizer
from inference_api.quote import quote
from .tool_format import renders_tool_role


# The mock's tokens are words of any length: it takes them as at most this many characters, so
# that it refuses huge prompts by the same path as a real tokenizer (its only use is tests).
MOCK_MAX_TOKEN_CHARS = 64
# Normalizers that never make text shorter, so that a token still stands for at least the
# characters of the text it came from. NFC and NFKC compose characters, Strip and the BERT
# normalizer drop some: with those no bound holds.
_KEEPING_NORMALIZERS = {"NFD", "NFKD", "Lowercase", "Prepend"}
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Digits", "Punctuation", "Split"}


class ChatTemplateError(ValueError):
    """The messages cannot be rendered with the model's template."""


class PromptTooLong(ValueError):
    """The prompt has more characters than the context could hold as tokens."""


def _never_shrinks(normalizer: dict | None) -> bool:
    if normalizer is None:
        return True
    kind = normalizer.get("type")
    if kind == "Sequence":
        return all(_never_shrinks(n) for n in normalizer.get("normalizers", []))
    if kind == "Replace":
        pattern = normalizer.get("pattern", {})
        return "String" in pattern and len(normalizer.get("content", "")) >= len(pattern["String"])
    return kind in _KEEPING_NORMALIZERS


def _keeps_every_char(pre_tokenizer: dict | None) -> bool:
    if pre_tokenizer is None:
        return True
    kind = pre_tokenizer.get("type")
    if kind == "Sequence":
        return all(_keeps_every_char(p) for p in pre_tokenizer.get("pretokenizers", []))
    if kind == "Split":
        return pre_tokenizer.get("behavior") != "Removed"
    return kind in _KEEPING_PRE_TOKENIZERS


def longest_token_chars(tokenizer) -> int | None:
    """The most characters of text one token can stand for, or None when nothing bounds it.

    A BPE token's string covers at least as many characters as the text it encodes (byte-level
    tokens spell one character per byte, byte-fallback tokens six per byte), as long as nothing
    before the model drops or merges characters and unknown characters are not fused into one
    token. Then a text longer than context x this cannot fit the context, whatever it holds.
    """
    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (model.get("unk_token") and model.get("fuse_unk")):
        return None
    if not (_never_shrinks(spec.get("normalizer"))
            and _keeps_every_char(spec.get("pre_tokenizer"))):
        return None
    return max(len(token) for token in tokenizer.get_vocab(with_added_tokens=True))


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


def _byte_of_char() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table), reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


BYTE_OF_CHAR = _byte_of_char()


class PromptEncoder:
    """Turns request text or chat messages into prompt token ids for the served model."""

    def __init__(self, info: dict, tokenizer=None):
        self.info = info
        self.context = info.get("max_seq_len")
        self._tool_role: bool | None = None
        if info.get("mock") and tokenizer is None:
            self._encode = lambda text, special: MockTokenizer().encode(text)
            self.longest_token = MOCK_MAX_TOKEN_CHARS
            # The mock's ids are hashes of words: there is no text to give back.
            self._decode = lambda ids: " ".join(f"<{i}>" for i in ids)
            self.vocab_size = MOCK_VOCAB_SIZE
            self._piece = lambda token_id: None
            return
        if tokenizer is None:
            tokenizer = load_tokenizer(Path(info["folder"]))
        # encode() holds the GIL for the whole text, stalling the thread that feeds every stream;
        # the batch calls release it while the Rust code runs.
        batch = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
        self._encode = lambda text, special: batch([text], add_special_tokens=special)[0].ids
        self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)
        self._piece = tokenizer.id_to_token
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.longest_token = longest_token_chars(tokenizer)

    @property
    def max_prompt_chars(self) -> int | None:
        """The longest text that could fit the context as tokens; None when nothing bounds it."""
        if self.longest_token is None or not self.context:
            return None
        return self.context * self.longest_token

    def check_length(self, chars: int) -> None:
        """PromptTooLong when a text of this many characters cannot fit the context."""
        limit = self.max_prompt_chars
        if limit is not None and chars > limit:
            raise PromptTooLong(f"the prompt has {chars} characters, over the {limit} that the "
                                f"context of {self.context} tokens can hold (a token stands for "
                                f"at most {self.longest_token} characters)")

    def encode(self, text: str, bounded: bool = True, special: bool = True) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the model's tokenizer adds
        (unless special is false).

        Text that cannot fit the context is refused before it is tokenized, unless the caller
        keeps only part of the tokens (bounded=False).
        """
        if bounded:
            self.check_length(len(text))
        return self._encode(text, special)

    def decode(self, ids: list[int]) -> str:
        """The text of token ids; ValueError naming the first id outside the vocabulary."""
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {quote(bad)} is outside the vocabulary "
                             f"(0..{self.vocab_size - 1})")
        return self._decode(ids)

    @lru_cache(maxsize=65536)
    def token_bytes(self, token_id: int) -> bytes:
        """A token's own bytes: part of a character where a byte-level token splits one."""
        piece = self._piece(token_id)
        if piece is not None and all(c in BYTE_OF_CHAR for c in piece):
            return bytes(BYTE_OF_CHAR[c] for c in piece)
        return self._decode([token_id]).encode()

    def chat_text(self, messages: list[dict], add_generation_prompt: bool = True,
                  tools: list[dict] | None = None) -> str:
        """The prompt text of a conversation in the model's own chat template."""
        # Checked before rendering too: a template renders every message's content.
        self.check_length(sum(len(m.get("content") or "") + len(str(m.get("tool_calls") or ""))
                              for m in messages) + len(str(tools or "")))
        return render_chat(self.info.get("chat_template"), messages, self.info.get("bos_token"),
                           self.info.get("eos_token"), add_generation_prompt, tools)

    @property
    def renders_tool_role(self) -> bool:
        """True when the chat template renders turns of role "tool"."""
        if self._tool_role is None:
            self._tool_role = renders_tool_role(lambda turns: self.chat_text(turns))
        return self._tool_role

    def encode_chat_text(self, text: str) -> list[int]:
        """Token ids of rendered chat text (the template already holds the special tokens)."""
        self.check_length(len(text))
        return self._encode(text, False)
