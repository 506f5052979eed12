#!/usr/bin/env python3
"""What structured outputs and log probabilities add to a full batch's decode step.

Runs the engine on the real model with --rows rows decoding, in several mixes: every row free
(the baseline), one row held to a JSON schema, every row held to it, every row asking for
log probabilities with 5 and with 20 alternatives. After an untimed warm-up round, mixes
alternate round by round, in a rotated order, so that they share the machine's noise; the
median step time of each counts only steps where every row decodes (no prompt chunk in it).

    .venv/bin/python scripts/benchmark_structured.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference_api.config import Config  # noqa: E402
from inference_api.engine.core import Engine  # noqa: E402
from inference_api.serving.grammars import grammar_for_json_schema  # noqa: E402
from inference_api.model.runner import ModelRunner  # noqa: E402
from inference_api.sampling_params import SamplingParams  # noqa: E402
from inference_api.process_messages import Submit  # noqa: E402
from inference_api.engine.step_budget import FixedBudget  # noqa: E402
from inference_api.engine.text_state import TextMaker  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                     "zip": {"type": "string"}},
                    "required": ["city", "zip"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "role", "address", "tags"],
}
PROMPT = "Describe a customer of a book shop in a few sentences, then as JSON:"


def mixes(rows: int, max_tokens: int) -> dict[str, list[SamplingParams]]:
    """Each mix: the parameters of every row."""
    grammar = grammar_for_json_schema(SCHEMA)

    def free(i, **extra):
        return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=i, ignore_eos=True,
                              **extra)

    def shaped(i):
        # A long enough budget that the answer ends by itself, not by the closing.
        return SamplingParams(max_tokens=max_tokens * 4, temperature=1.0, seed=i, grammar=grammar)

    return {
        "free": [free(i) for i in range(rows)],
        "1 constrained": [shaped(0)] + [free(i) for i in range(1, rows)],
        "all constrained": [shaped(i) for i in range(rows)],
        "logprobs 5": [free(i, logprobs=5) for i in range(rows)],
        "logprobs 20": [free(i, logprobs=20) for i in range(rows)],
    }


def decode_steps(runner: ModelRunner, params: list[SamplingParams], prompt: list[int],
                 max_tokens: int) -> list[float]:
    """Seconds of each step in which every row decoded (no prompt chunk in it)."""
    engine = Engine(runner, TextMaker.for_tokenizer(runner.tokenizer, runner.eos_ids),
                    len(params), FixedBudget(512), runner.max_seq_len, prefix_caching=False)
    for i, p in enumerate(params):
        engine.add(Submit(f"s{i}", prompt, p))
    times = []
    for _ in range(max_tokens):
        full = (engine.busy_rows == len(params) and not engine.queued and all(
            not s.prefilling for s in engine.scheduler.running.values()))
        start = time.perf_counter()
        engine.step()
        if full:
            times.append(time.perf_counter() - start)
    while engine.has_work():
        for seq in list(engine.scheduler.running.values()):
            engine.cancel(seq.session_id)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48, help="steps per mix and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    runner = ModelRunner(Config.from_env(max_users=args.rows))
    prompt = runner.tokenizer.encode(PROMPT).ids
    print(f"device {runner.info['device']} dtype {runner.info['dtype']} rows {args.rows} "
          f"steps per mix and round {args.tokens} rounds {args.rounds}")
    all_mixes = list(mixes(args.rows, args.tokens).items())
    for _, params in all_mixes:  # warm-up: first-use costs of every path
        decode_steps(runner, params, prompt, 8)
    steps: dict[str, list[float]] = {name: [] for name, _ in all_mixes}
    for round_ in range(args.rounds):
        shift = round_ % len(all_mixes)
        for name, params in all_mixes[shift:] + all_mixes[:shift]:
            steps[name].extend(decode_steps(runner, params, prompt, args.tokens))
    base = statistics.median(steps["free"]) * 1000
    print(f"{'mix':<16} {'steps':>5} {'median ms':>9} {'added ms':>8} {'ratio':>6}")
    for name, times in steps.items():
        median = statistics.median(times) * 1000
        print(f"{name:<16} {len(times):5d} {median:9.1f} {median - base:8.1f} "
              f"{median / base:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
