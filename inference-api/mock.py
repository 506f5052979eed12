"""The mock runner and tokenizer: same engine, queues and protocol, no model and no torch."""
from __future__ import annotations

import time
import zlib

from .config import Config
from .scheduler import StepPlan
from .sequence import Sequence

MOCK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


MOCK_VOCAB_SIZE = 50_000


class MockTokenizer:
    """One token per whitespace-separated word: enough for lengths and limits."""

    def encode(self, text: str) -> list[int]:
        """Token ids of a text."""
        return [zlib.crc32(word.encode()) % MOCK_VOCAB_SIZE for word in text.split()]


def mock_word(prompt_text: str, index: int) -> str:
    """The mock's token number `index` for a prompt: a word of the prompt and the index."""
    words = prompt_text.split() or ["empty"]
    return f"{words[index % len(words)]}{index} "


class MockDetokenizer:
    """The mock's text: token number i of a prompt is mock_word(prompt, i)."""

    def __init__(self, seq: Sequence):
        self.prompt_text = seq.prompt_text

    def push(self, token_id: int) -> str:
        """The word of this token."""
        return mock_word(self.prompt_text, token_id)


def mock_answer(prompt_text: str, num_tokens: int) -> str:
    """The whole text the mock generates for a prompt in num_tokens tokens."""
    return "".join(mock_word(prompt_text, i) for i in range(num_tokens))


class MockRunner:
    """A model that takes MOCK_STEP_MS a step and whose token is its position in the answer."""

    def __init__(self, config: Config):
        self.step_seconds = config.mock_step_ms / 1000.0
        self.max_seq_len = config.max_seq_len
        self.info = {"mock": True, "max_seq_len": config.max_seq_len, "eos_token_ids": [],
                     "chat_template": MOCK_CHAT_TEMPLATE, "architecture": "mock",
                     "device": "none", "dtype": "none"}

    def start(self, seq: Sequence) -> None:
        """Nothing to prepare."""

    def finish(self, seq: Sequence) -> None:
        """Nothing to forget."""

    def run(self, plan: StepPlan) -> list[tuple[Sequence, int]]:
        """Pause like a model step, then give each ready row its next token (its index)."""
        if self.step_seconds:
            time.sleep(self.step_seconds)
        seqs = list(plan.decode) + [c.seq for c in plan.prefill if c.completes_prompt]
        return [(seq, len(seq.generated)) for seq in seqs]
