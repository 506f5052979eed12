"""Per-request generation parameters, shared by the frontend and the backend (no torch)."""
from __future__ import annotations

from dataclasses import dataclass

MAX_TOP_K = 1000


@dataclass(frozen=True)
class SamplingParams:
    """How one request is generated; checked again here so a bad value never reaches a step."""

    max_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # transformers semantics, over prompt and generated tokens
    presence_penalty: float = 0.0  # OpenAI semantics, over generated tokens
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    eos_token_ids: tuple[int, ...] = ()  # on top of the model's own
    ignore_eos: bool = False
    min_tokens: int = 0
    return_prompt: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))
        _check(self.max_tokens >= 1, "max_tokens", self.max_tokens, ">= 1")
        _check(0 <= self.temperature <= 5, "temperature", self.temperature, "0..5")
        _check(0 <= self.top_k <= MAX_TOP_K, "top_k", self.top_k, f"0..{MAX_TOP_K} (0 = off)")
        _check(0 < self.top_p <= 1, "top_p", self.top_p, "0 < top_p <= 1")
        _check(0 <= self.min_p <= 1, "min_p", self.min_p, "0..1")
        _check(0 < self.repetition_penalty <= 10, "repetition_penalty", self.repetition_penalty,
               "0 < repetition_penalty <= 10")
        _check(-2 <= self.presence_penalty <= 2, "presence_penalty", self.presence_penalty, "-2..2")
        _check(-2 <= self.frequency_penalty <= 2, "frequency_penalty", self.frequency_penalty,
               "-2..2")
        _check(self.seed is None or 0 <= self.seed < 2**63, "seed", self.seed, "0 <= seed < 2**63")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", self.stop,
               "non-empty strings")
        _check(all(isinstance(t, int) and t >= 0 for t in self.eos_token_ids), "eos_token_ids",
               self.eos_token_ids, "token ids >= 0")
        _check(0 <= self.min_tokens <= self.max_tokens, "min_tokens", self.min_tokens,
               "0..max_tokens")

    @property
    def greedy(self) -> bool:
        """True when the most likely token is always taken."""
        return self.temperature == 0


def _check(ok: bool, name: str, value, allowed: str):
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range: expected {allowed}")
