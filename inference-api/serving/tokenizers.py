"""The served model's tokenizer as the server uses it for prompts, and what bounds a token's text.

The server loads the tokenizer.json of the folder the backend loaded (its info names it). The
mock backend has no tokenizer: the server counts a mock prompt's tokens as its words.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

from tokenizers import Tokenizer

MOCK_VOCAB_SIZE = 50_000


class MockTokenizer:
    """One token per whitespace-separated word: enough for lengths and limits."""

    def encode(self, text: str) -> list[int]:
        """Token ids of a text."""
        return [zlib.crc32(word.encode()) % MOCK_VOCAB_SIZE for word in text.split()]


def load_tokenizer(folder: str) -> Tokenizer:
    """The fast tokenizer of the model folder the backend loaded."""
    return Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))


# The mock's tokens are words of any length: it takes them as at most this many characters, so
# that it refuses huge prompts by the same path as a real tokenizer (its only use is tests).
MOCK_MAX_TOKEN_CHARS = 64


# Normalizers that never make text shorter, so that a token still stands for at least the
# characters of the text it came from. NFC and NFKC compose characters, Strip and the BERT
# normalizer drop some: with those no bound holds.
_KEEPING_NORMALIZERS = {"NFD", "NFKD", "Lowercase", "Prepend"}


_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Digits", "Punctuation", "Split"}


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
