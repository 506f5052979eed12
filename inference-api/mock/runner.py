"""The mock runner: the same engine, queues and messages as the model's, no model and no torch."""
from __future__ import annotations

import secrets
import time
import zlib

from inference_api.config import Config
from inference_api.engine.sequence import NewToken, Sequence
from inference_api.engine.step_plan import PromptChunk, StepPlan
from inference_api.process_messages import TokenLogprob

from .grammar import MOCK_GRAMMAR_EOS, MockGrammarRows
from .text import mock_word

MOCK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class MockRunner:
    """A model that takes MOCK_STEP_MS a step and whose token is its position in the answer."""

    def __init__(self, config: Config):
        self.step_seconds = config.mock_step_ms / 1000.0
        self.max_seq_len = config.max_seq_len
        self.info = {"mock": True, "max_seq_len": config.max_seq_len, "eos_token_ids": [],
                     "chat_template": MOCK_CHAT_TEMPLATE, "architecture": "mock",
                     "device": "none", "dtype": "none"}
        self.grammars = MockGrammarRows()
        # LORA_MODULES' names are served (their files are not read: the mock has no weights).
        self.adapters = list(config.lora_adapters)
        self.info["adapters"] = self.adapters

    def start(self, seq: Sequence) -> None:
        """A grammar's matcher for a row that asks for a structured output."""
        if seq.adapter is not None and seq.adapter not in self.adapters:
            raise ValueError(f"the model {seq.adapter!r} is not served here")
        if seq.params.grammar is not None:
            seed = seq.params.seed
            if seed is None:
                # A greedy request has one answer, as on a model: the same prompt, the same
                # draws. Otherwise each request draws anew.
                seed = zlib.crc32(repr(seq.prompt_ids).encode()) if seq.params.greedy \
                    else secrets.randbits(32)
            self.grammars.add(seq.row, seq.params.grammar, seq.params.max_tokens, seed)

    def finish(self, seq: Sequence) -> None:
        """Forget a row's grammar."""
        self.grammars.remove(seq.row)

    def run(self, plan: StepPlan) -> list[NewToken]:
        """Pause like a model step, then give each ready row its next token (its index)."""
        if self.step_seconds:
            time.sleep(self.step_seconds)
        for chunk in plan.prefill:
            if chunk.seq.wants_prompt_logprobs:
                record_mock_prompt_logprobs(chunk)
        seqs = list(plan.decode) + [c.seq for c in plan.prefill if c.completes_prompt]
        return [self._new_token(seq) for seq in seqs]

    def _new_token(self, seq: Sequence) -> NewToken:
        """Token number len(generated): its index, or a byte its grammar allows."""
        step = len(seq.generated)
        if not self.grammars.constrained(seq.row):
            return NewToken(seq, step, mock_logprob(seq, step, seq.params.logprobs))
        token = self.grammars.choose(seq.row, step)
        accepted = self.grammars.accept(seq.row, token, seq.params.max_tokens - step - 1)
        logprob = None if seq.params.logprobs is None else TokenLogprob(
            token, 0.0, ((token, 0.0),)[:seq.params.logprobs],
            texts={token: "" if token == MOCK_GRAMMAR_EOS else chr(token)})
        return NewToken(seq, token, logprob, accepted.closing, accepted.error)


def mock_logprob(seq: Sequence, index: int, top: int | None) -> TokenLogprob | None:
    """The mock's made-up log probabilities for its token `index`: it is always the likeliest,
    followed by the next indices, each less likely by one."""
    if top is None:
        return None
    alternatives = tuple((index + j, -0.25 * (1 + index % 3) - j) for j in range(top))
    ids = [index + j for j in range(max(top, 1))]
    return TokenLogprob(index, -0.25 * (1 + index % 3), alternatives,
                        texts={i: mock_word(seq.prompt_text, i, seq.adapter) for i in ids})


def record_mock_prompt_logprobs(chunk: PromptChunk) -> None:
    """Made-up log probabilities for the prompt tokens of a chunk (the first has none)."""
    seq = chunk.seq
    if seq.prompt_logprobs is None:
        seq.prompt_logprobs = [None]
    end = min(chunk.start + chunk.length + 1, seq.num_prompt)
    for position in range(chunk.start + 1, end):
        token = seq.prompt_ids[position]
        seq.prompt_logprobs.append(TokenLogprob(
            token, -1.0, tuple((token + j, -1.0 - j) for j in range(seq.params.prompt_logprobs))))
