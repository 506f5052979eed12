"""LoRA adapters on the default model in float32, stepped in this process: greedy answers token
for token those of transformers with PEFT's adapters, with rows of two adapters and of none in
the same steps, and prefix reuse that never crosses adapters."""
from __future__ import annotations

import pytest

from inference_api.config import Config
from inference_api.process_messages import Submit
from lora_adapters import ADAPTERS, NEW_TOKENS, PROMPTS
from real_engine import greedy, make_engine, run, text_of

# The adapters' fixture runs PEFT's greedy answers first: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
MODELS = [None, *ADAPTERS]  # None: the base model


@pytest.fixture(scope="module")
def runner(lora_adapter_set):
    from inference_api.model.runner import ModelRunner

    return ModelRunner(Config(dtype="float32", device="cpu", max_users=12, max_seq_len=256,
                              lora_modules=lora_adapter_set.lora_modules))


def submit(adapters, name: str, prompt: str, adapter: str | None) -> Submit:
    ids = adapters.tokenizer(prompt)["input_ids"]
    return Submit(name, ids, greedy(NEW_TOKENS, ignore_eos=True), adapter=adapter)


def test_rows_of_two_adapters_and_none_in_the_same_steps_match_peft(runner, lora_adapter_set):
    answers = lora_adapter_set.answers
    for adapter in ADAPTERS:  # each adapter changes answers: the test can tell them apart
        assert any(answers[(p, adapter)] != answers[(p, None)] for p in PROMPTS)
    # All nine at once: prompt chunks of 16 tokens beside decoding rows, every step mixed.
    engine = make_engine(runner, prefill_budget=16)
    arrivals = {0: [submit(lora_adapter_set, f"{i}-{model}", prompt, model)
                    for i, prompt in enumerate(PROMPTS) for model in MODELS]}
    results = run(engine, arrivals)
    for i, prompt in enumerate(PROMPTS):
        for model in MODELS:
            outputs = results[f"{i}-{model}"]
            assert text_of(outputs) == answers[(prompt, model)], (prompt, model)
            assert outputs[-1].completion_tokens == NEW_TOKENS


def test_the_same_prompt_under_each_adapter_gets_its_own_answer_with_prefix_reuse(
        runner, lora_adapter_set):
    answers = lora_adapter_set.answers
    prompt = PROMPTS[2]
    engine = make_engine(runner, prefill_budget=64, prefix_caching=True)
    cached = []
    for step, model in enumerate(["tune1", "tune2", None, "tune1", None]):
        results = run(engine, {0: [submit(lora_adapter_set, f"s{step}", prompt, model)]})
        outputs = results[f"s{step}"]
        assert text_of(outputs) == answers[(prompt, model)], (step, model)
        cached.append(outputs[0].cached_tokens)
    # Rows that ran another adapter hold the prompt, but only its own adapter's rows are reused.
    prompt_tokens = len(lora_adapter_set.tokenizer(prompt)["input_ids"])
    assert cached == [0, 0, 0, prompt_tokens - 1, prompt_tokens - 1]
