"""The engine on the real model's runner, stepped in this process: the prompts, a fresh engine,
a run with prompts arriving at given steps (shared by the real-model tests of the engine, the
log probabilities and structured outputs)."""
from __future__ import annotations

from inference_api.engine.core import Engine
from inference_api.engine.step_budget import FixedBudget
from inference_api.sampling_params import SamplingParams
from inference_api.process_messages import Submit
from inference_api.engine.text_state import TextMaker

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "Q: What is 12 times 12?\nA:",
    "List three colors:",
    "Water boils at",
    "The quick brown fox jumps over the lazy dog. " * 12 + "Summarize the text above:",
    "Hi",
]


def make_engine(runner, prefill_budget: int = 16, prefix_caching: bool = True) -> Engine:
    """A fresh engine over the shared runner (a small prefill budget forces chunked prefill)."""
    return Engine(runner, TextMaker.for_tokenizer(runner.tokenizer, runner.eos_ids),
                  runner.model.max_rows, FixedBudget(prefill_budget), runner.max_seq_len,
                  prefix_caching=prefix_caching)


def run(engine: Engine, arrivals: dict[int, list[Submit]], max_steps: int = 10_000):
    """Step the engine, submitting prompts at the given steps; returns outputs per session."""
    results: dict[str, list] = {}
    for step in range(max_steps):
        for submit in arrivals.get(step, []):
            for out in engine.add(submit):
                results.setdefault(out.session_id, []).append(out)
        for out in engine.step():
            results.setdefault(out.session_id, []).append(out)
        if step > max(arrivals) and not engine.has_work():
            return results
    raise AssertionError("engine did not finish")


def text_of(outputs) -> str:
    return "".join(o.text for o in outputs)


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, **kw)
