"""Token log probabilities in OpenAI's two shapes: legacy completions and chat."""
from __future__ import annotations

from typing import Callable

from inference_api.process_messages import TokenLogprob

TokenBytes = Callable[[int], bytes]  # a token id's bytes in the served tokenizer


def _text(token_id: int, entry: TokenLogprob, token_bytes: TokenBytes) -> str:
    """A token's text: the backend's own where it gave one, else the tokenizer's."""
    if entry.texts and token_id in entry.texts:
        return entry.texts[token_id]
    return token_bytes(token_id).decode("utf-8", "replace")


def _bytes(token_id: int, entry: TokenLogprob, token_bytes: TokenBytes) -> list[int]:
    if entry.texts and token_id in entry.texts:
        return list(entry.texts[token_id].encode())
    return list(token_bytes(token_id))


def completion_logprobs(entries: list[TokenLogprob], token_bytes: TokenBytes,
                        offset: int = 0) -> dict:
    """The legacy shape: tokens, token_logprobs, top_logprobs and text_offset, in token order.

    offset is where the first token's text starts in the choice's text.
    """
    shape = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for entry in entries:
        text = _text(entry.token_id, entry, token_bytes)
        shape["tokens"].append(text)
        shape["token_logprobs"].append(entry.logprob)
        # logprobs 0 asks for no alternatives: the entry holds the chosen token alone, as
        # vLLM gives it (evaluation harnesses read it there).
        top = entry.top or [(entry.token_id, entry.logprob)]
        shape["top_logprobs"].append({_text(i, entry, token_bytes): lp for i, lp in top})
        shape["text_offset"].append(offset)
        offset += len(text)
    return shape


def first_prompt_token(token_id: int, token_bytes: TokenBytes) -> dict:
    """The legacy shape of a prompt's first token, which has no log probability."""
    text = token_bytes(token_id).decode("utf-8", "replace")
    return {"tokens": [text], "token_logprobs": [None], "top_logprobs": [None],
            "text_offset": [0]}


def joined(first: dict, rest: dict) -> dict:
    """Two legacy shapes one after the other."""
    return {key: first[key] + rest[key] for key in first}


def chat_logprobs(entries: list[TokenLogprob], token_bytes: TokenBytes) -> dict:
    """The chat shape: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}."""
    content = []
    for entry in entries:
        content.append({
            "token": _text(entry.token_id, entry, token_bytes), "logprob": entry.logprob,
            "bytes": _bytes(entry.token_id, entry, token_bytes),
            "top_logprobs": [{"token": _text(i, entry, token_bytes), "logprob": lp,
                              "bytes": _bytes(i, entry, token_bytes)} for i, lp in entry.top]})
    return {"content": content, "refusal": None}


class LogprobShaper:
    """Each choice's log probabilities in the route's shape, whole or a batch at a time."""

    def __init__(self, token_bytes: TokenBytes, prompt_ids: list[list[int]], chat: bool, wanted: bool):
        self.token_bytes = token_bytes
        self.prompt_ids = prompt_ids  # per choice
        self.chat = chat
        self.wanted = wanted
        self.offsets = [0] * len(prompt_ids)  # text_offset of each choice's next token

    def batch(self, index: int, entries: list[TokenLogprob],
              prompt_entries: list[TokenLogprob | None] | None = None) -> dict | None:
        """The log probabilities of some of a choice's tokens, after those already given."""
        if not self.wanted:
            return None
        if self.chat:
            return chat_logprobs(entries, self.token_bytes)
        shape = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        if prompt_entries is not None:  # echo: the prompt's tokens come first
            first = first_prompt_token(self.prompt_ids[index][0], self.token_bytes)
            shape = joined(first, completion_logprobs(prompt_entries[1:], self.token_bytes,
                                                      len(first["tokens"][0])))
            self.offsets[index] = _end_offset(shape)
        shape = joined(shape, completion_logprobs(entries, self.token_bytes,
                                                  self.offsets[index]))
        self.offsets[index] = _end_offset(shape, self.offsets[index])
        return shape


def _end_offset(shape: dict, empty: int = 0) -> int:
    """Where the text after a legacy shape's last token starts."""
    if not shape["tokens"]:
        return empty
    return shape["text_offset"][-1] + len(shape["tokens"][-1])
