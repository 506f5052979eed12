"""Prompts to token ids: plain text, or chat messages through the model's template; a prompt too
long for the context is refused before it is tokenized."""
from __future__ import annotations

from functools import lru_cache

from inference_api.quote import quote

from .errors import ContextExceeded
from .templates import render_chat
from .tokenizers import (BYTE_OF_CHAR, MOCK_MAX_TOKEN_CHARS, MOCK_VOCAB_SIZE, MockTokenizer,
                         load_tokenizer, longest_token_chars)
from .tool_format import renders_tool_role


class PromptTooLong(ContextExceeded):
    """The prompt has more characters than the context could hold as tokens."""


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
            tokenizer = load_tokenizer(info["folder"])
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
