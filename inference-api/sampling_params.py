"""Per-request generation parameters, shared by the server and the backend (no torch)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .quote import quote

MAX_TOP_K = 1000  # beyond this top-k hardly differs from "off", and it bounds the topk cost
MAX_TEMPERATURE = 5.0
MAX_REPETITION_PENALTY = 10.0
MAX_PENALTY = 2.0  # presence and frequency penalties, either sign
MAX_SEED = 2**63 - 1  # seeds the routes take; SamplingParams reduces any int to 64 bits
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_EXTRA_EOS = 16
MAX_SAMPLES = 1024  # generations one request may hold; the server's rows bound it further
MAX_TOP_LOGPROBS = 20  # alternatives per token, as OpenAI's chat route allows
MAX_LOGIT_BIAS = 300  # biased token ids per request (OpenAI allows 300)


def _check(ok: bool, name: str, value, allowed: str):
    if not ok:
        raise ValueError(f"{name}={quote(value)} is not valid: expected {allowed}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens; every field is range-checked on creation."""

    max_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0  # drop tokens less likely than min_p * the best token's probability
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # any int; reduced to 64 bits
    stop: tuple[str, ...] = ()
    eos_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    return_prompt: bool = False
    logprobs: int | None = None  # log probability of each generated token and this many others
    prompt_logprobs: int | None = None  # the same for every prompt token (the first has none)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit), -100..100
    grammar: str | None = None  # an llguidance grammar every generated token must follow

    def __post_init__(self):
        # Accept a single string or a list where a tuple is expected, as JSON gives them.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        for name in ("stop", "eos_token_ids"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        # 0 only when the prompt's own log probabilities are all that is wanted (echo).
        _check(_is_int(self.max_tokens) and (self.max_tokens >= 1 or (
            self.max_tokens == 0 and self.prompt_logprobs is not None)), "max_tokens",
            self.max_tokens, "an integer >= 1")
        _check(_is_num(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE,
               "temperature", self.temperature, f"a number in 0..{MAX_TEMPERATURE:g} (0 = greedy)")
        _check(_is_int(self.top_k) and 0 <= self.top_k <= MAX_TOP_K, "top_k", self.top_k,
               f"an integer in 0..{MAX_TOP_K} (0 = off)")
        _check(_is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p,
               "a number with 0 < top_p <= 1")
        _check(_is_num(self.min_p) and 0 <= self.min_p <= 1, "min_p", self.min_p,
               "a number in 0..1")
        _check(_is_num(self.repetition_penalty)
               and 0 < self.repetition_penalty <= MAX_REPETITION_PENALTY, "repetition_penalty",
               self.repetition_penalty, f"a number with 0 < x <= {MAX_REPETITION_PENALTY:g}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(_is_num(value) and -MAX_PENALTY <= value <= MAX_PENALTY, name, value,
                   f"a number in -{MAX_PENALTY:g}..{MAX_PENALTY:g}")
        _check(self.seed is None or _is_int(self.seed), "seed", self.seed, "an integer or null")
        _check(isinstance(self.stop, tuple) and len(self.stop) <= MAX_STOPS
               and all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in self.stop),
               "stop", self.stop,
               f"at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters")
        _check(isinstance(self.eos_token_ids, tuple) and len(self.eos_token_ids) <= MAX_EXTRA_EOS
               and all(_is_int(t) and t >= 0 for t in self.eos_token_ids),
               "eos_token_ids", self.eos_token_ids,
               f"at most {MAX_EXTRA_EOS} token ids >= 0")
        for name in ("ignore_eos", "return_prompt"):
            _check(isinstance(getattr(self, name), bool), name, getattr(self, name), "true or false")
        _check(_is_int(self.min_tokens) and 0 <= self.min_tokens <= self.max_tokens, "min_tokens",
               self.min_tokens, f"an integer in 0..max_tokens ({self.max_tokens})")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _check(value is None or (_is_int(value) and 0 <= value <= MAX_TOP_LOGPROBS), name,
                   value, f"null or an integer in 0..{MAX_TOP_LOGPROBS}")
        if isinstance(self.logit_bias, dict):
            object.__setattr__(self, "logit_bias", tuple(self.logit_bias.items()))
        _check(isinstance(self.logit_bias, tuple) and len(self.logit_bias) <= MAX_LOGIT_BIAS
               and all(isinstance(pair, tuple) and len(pair) == 2 and _is_int(pair[0])
                       and pair[0] >= 0 and _is_num(pair[1]) and -100 <= pair[1] <= 100
                       for pair in self.logit_bias), "logit_bias", self.logit_bias,
               f"at most {MAX_LOGIT_BIAS} token ids >= 0, each with a number in -100..100")
        _check(self.grammar is None or isinstance(self.grammar, str), "grammar", self.grammar,
               "null or a grammar")
        if self.grammar is not None and (self.ignore_eos or self.min_tokens):
            # The grammar decides where the answer ends; banning its end would leave no token.
            raise ValueError("ignore_eos and min_tokens cannot be combined with a structured "
                             "output (response_format, json_schema, grammar or tools)")

    @property
    def greedy(self) -> bool:
        """True when the row takes the argmax and needs no random numbers."""
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        """True when any of the three penalties changes the logits."""
        return (self.repetition_penalty != 1 or self.presence_penalty != 0
                or self.frequency_penalty != 0)


# Sampling fields a model's generation_config.json may give defaults for, and the defaults used
# when it gives none: at temperature 1 over the whole vocabulary a small model's answers are
# often gibberish; these keep them sensible (as llama.cpp's own defaults do).
DEFAULTED_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
FALLBACK_DEFAULTS = {"temperature": 0.7, "top_k": 40, "top_p": 0.9}


def sampling_defaults(generation_config: dict) -> dict:
    """The defaults for fields a request leaves out: the model's own where it has any."""
    own = {k: generation_config[k] for k in DEFAULTED_FIELDS if k in generation_config}
    if generation_config.get("do_sample") is False:
        own["temperature"] = 0.0
    return own or dict(FALLBACK_DEFAULTS)


def check_token_ids(name: str, ids, vocab_size: int) -> None:
    """ValueError naming the field unless every token id is below the vocabulary size."""
    _check(all(t < vocab_size for t in ids), name, ids,
           f"token ids below the vocabulary size {vocab_size}")


def check_context(prompt_tokens: int, max_tokens: int, context: int) -> None:
    """ValueError unless a prompt and its max_tokens fit the context together."""
    if prompt_tokens + max_tokens > context:
        raise ValueError(f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                         f"together {prompt_tokens + max_tokens} tokens, over the context of "
                         f"{context} tokens")
