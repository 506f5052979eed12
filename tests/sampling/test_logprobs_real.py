"""Log probabilities and logit_bias on the real model, against transformers in float32."""
from __future__ import annotations

import pytest
import torch

from inference_api.process_messages import Submit
from real_engine import PROMPTS, greedy, make_engine, run

pytestmark = pytest.mark.slow


def reference_logprobs(model, ids: list[int]) -> torch.Tensor:
    """transformers' log-softmax at every position of ids ([len(ids), vocab])."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, -1)


def test_greedy_token_logprobs_equal_the_models_log_softmax(model_runner_fp32, hf_model_fp32):
    model, tokenizer = hf_model_fp32
    engine = make_engine(model_runner_fp32)
    prompts = {f"s{i}": tokenizer(p)["input_ids"] for i, p in enumerate(PROMPTS[:5])}
    # Staggered arrivals: rows decode beside prefills and rows without logprobs.
    arrivals = {i: [Submit(sid, ids, greedy(8, logprobs=5 if i % 2 == 0 else None))]
                for i, (sid, ids) in enumerate(prompts.items())}
    results = run(engine, arrivals)
    for i, (sid, ids) in enumerate(prompts.items()):
        entries = [e for o in results[sid] for e in o.logprobs or ()]
        if i % 2:
            assert entries == [] and all(o.logprobs is None for o in results[sid])
            continue
        generated = [e.token_id for e in entries]
        assert len(generated) == 8
        reference = reference_logprobs(model, ids + generated)
        for step, entry in enumerate(entries):
            row = reference[len(ids) - 1 + step]
            assert entry.token_id == int(row.argmax())  # greedy: the likeliest token
            assert entry.logprob == pytest.approx(float(row[entry.token_id]), abs=2e-3)
            values, top_ids = row.topk(5)
            assert [t for t, _ in entry.top] == top_ids.tolist()
            assert [lp for _, lp in entry.top] == pytest.approx(values.tolist(), abs=2e-3)


def test_prompt_logprobs_equal_the_models_log_softmax(model_runner_fp32, hf_model_fp32):
    model, tokenizer = hf_model_fp32
    ids = tokenizer(PROMPTS[6])["input_ids"]  # long enough to be prefilled in several chunks
    engine = make_engine(model_runner_fp32, prefill_budget=16)
    # The same prompt once before, so prefix reuse would skip it were echo not computed whole.
    run(engine, {0: [Submit("before", ids, greedy(1))]})
    [first, *_] = run(engine, {0: [Submit("echo", ids, greedy(0, prompt_logprobs=2))]})["echo"]
    entries = first.prompt_logprobs
    assert len(entries) == len(ids) and entries[0] is None
    reference = reference_logprobs(model, ids)
    for position, entry in enumerate(entries[1:], start=1):
        assert entry.token_id == ids[position]
        expected = reference[position - 1]
        assert entry.logprob == pytest.approx(float(expected[ids[position]]), abs=2e-3)
        assert [t for t, _ in entry.top] == expected.topk(2).indices.tolist()


def test_logit_bias_moves_the_greedy_choice(model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    ids = tokenizer(PROMPTS[0])["input_ids"]
    engine = make_engine(model_runner_fp32)
    plain = run(engine, {0: [Submit("plain", ids, greedy(3, logprobs=1))]})["plain"]
    first = plain[0].logprobs[0]
    assert first.top[0][0] == first.token_id  # a greedy row's token is its likeliest
    banned = run(engine, {0: [Submit("banned", ids, greedy(
        3, logprobs=1, logit_bias=((first.token_id, -100.0),)))]})["banned"]
    assert banned[0].logprobs[0].token_id != first.token_id
    forced_id = tokenizer(" Berlin", add_special_tokens=False)["input_ids"][0]
    forced = run(engine, {0: [Submit("forced", ids, greedy(
        3, logit_bias=((forced_id, 100.0),)))]})["forced"]
    assert "".join(o.text for o in forced).startswith(tokenizer.decode([forced_id]))
