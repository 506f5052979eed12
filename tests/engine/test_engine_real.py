"""The engine on the real default model: exact greedy answers, seeds, rows, stops, UTF-8, limits."""
from __future__ import annotations

import pytest

from inference_api.process_messages import Submit
from inference_api.sampling_params import SamplingParams
from real_engine import PROMPTS, greedy, make_engine, run, text_of

pytestmark = pytest.mark.slow


def test_staggered_greedy_equals_transformers_generate(model_runner_fp32, hf_model_fp32):
    model, tokenizer = hf_model_fp32
    engine = make_engine(model_runner_fp32)
    arrivals = {}
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt)["input_ids"]
        # Arrive while earlier rows are mid-generation and mid-prefill.
        arrivals.setdefault(i * 3, []).append(Submit(f"s{i}", ids, greedy(24, ignore_eos=True)))
    results = run(engine, arrivals)
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt, return_tensors="pt")
        expected = model.generate(**ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)
        want = tokenizer.decode(expected[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        outs = results[f"s{i}"]
        assert text_of(outs) == want, f"prompt {i}"
        assert outs[-1].completion_tokens == 24 and outs[-1].finish_reason == "length"


def test_seeded_sampling_same_alone_and_beside_31_others(model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    ids = tokenizer("Tell me a story about a dragon.")["input_ids"]
    params = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.95, top_k=50, seed=1234,
                            ignore_eos=True)
    alone = run(make_engine(model_runner_fp32), {0: [Submit("seeded", ids, params)]})
    crowd = [Submit(f"other{i}", tokenizer(PROMPTS[i % 8])["input_ids"],
                    SamplingParams(max_tokens=20 + i, temperature=1.0, seed=i)) for i in range(31)]
    # The seeded request arrives last, so it lands in another row beside 31 busy ones.
    beside = run(make_engine(model_runner_fp32, 64), {0: crowd, 2: [Submit("seeded", ids, params)]})
    assert text_of(alone["seeded"]) == text_of(beside["seeded"])
    other_seed = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.95, top_k=50, seed=99,
                                ignore_eos=True)
    different = run(make_engine(model_runner_fp32), {0: [Submit("seeded", ids, other_seed)]})
    assert text_of(different["seeded"]) != text_of(alone["seeded"])


def test_forty_requests_on_32_rows_all_finish(model_runner_fp32):
    engine = make_engine(model_runner_fp32, 128)
    submits = [Submit(f"r{i}", [1, 504, 3458 + i], greedy(4 + i % 5, ignore_eos=True))
               for i in range(40)]
    for s in submits:
        engine.add(s)
    engine.step()
    assert engine.busy_rows == 32 and engine.queued == 8
    results = run(engine, {0: []})
    assert sorted(results) == sorted(s.session_id for s in submits)
    for s in submits:
        assert results[s.session_id][-1].completion_tokens == s.params.max_tokens


def test_stop_string_split_across_tokens_is_not_emitted(model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    ids = tokenizer("The capital of France is")["input_ids"]
    full = text_of(run(make_engine(model_runner_fp32),
                       {0: [Submit("a", ids, greedy(24, ignore_eos=True))]})["a"])
    # A stop made of the end of one token and the start of the next, found in the free answer.
    pieces = [tokenizer.decode([t]) for t in tokenizer(full)["input_ids"]]
    a, b = next((a, b) for a, b in zip(pieces, pieces[1:]) if len(a) >= 2 and len(b) >= 2)
    stop = a[-2:] + b[:2]
    assert stop in full and len(stop) == 4
    outs = run(make_engine(model_runner_fp32),
               {0: [Submit("b", ids, greedy(24, ignore_eos=True, stop=(stop,)))]})["b"]
    assert text_of(outs) == full[:full.index(stop)]
    assert outs[-1].finish_reason == "stop"


def test_chinese_and_emoji_stream_valid_utf8_at_every_message(model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    prompt = "请用中文回答：你好吗？🙂🎉 Répondez avec des emojis 🐍🔥:"
    ids = tokenizer(prompt)["input_ids"]
    params = SamplingParams(max_tokens=48, temperature=1.0, seed=7, ignore_eos=True)
    outs = run(make_engine(model_runner_fp32), {0: [Submit("u", ids, params, prompt)]})["u"]
    for out in outs:
        out.text.encode("utf-8")  # a lone surrogate would raise
        assert "\ufffd" not in out.text
    assert sum(o.num_tokens for o in outs) == 48


def test_return_prompt_and_eos(model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    prompt = "Hello"
    ids = tokenizer(prompt)["input_ids"]
    outs = run(make_engine(model_runner_fp32),
               {0: [Submit("p", ids, greedy(3, return_prompt=True, ignore_eos=True), prompt)]})["p"]
    assert text_of(outs).startswith(prompt) and len(text_of(outs)) > len(prompt)
    # Making the model's first greedy token an extra EOS id ends the answer at once.
    first = run(make_engine(model_runner_fp32), {0: [Submit("f", ids, greedy(1))]})["f"]
    first_id = tokenizer(prompt + first[-1].text)["input_ids"][len(ids)]
    outs = run(make_engine(model_runner_fp32),
               {0: [Submit("e", ids, greedy(10, eos_token_ids=(first_id,)))]})["e"]
    assert outs[-1].finish_reason == "eos" and outs[-1].completion_tokens == 1


def test_a_request_the_runner_refuses_fails_alone(model_runner_fp32):
    engine = make_engine(model_runner_fp32)
    engine.add(Submit("good", [1, 2, 3], greedy(6, ignore_eos=True)))
    engine.add(Submit("bad", [1, 2, 3], greedy(6, eos_token_ids=(10**7,))))
    results = run(engine, {0: []})
    assert results["bad"][-1].finish_reason == "error"
    assert "eos_token_ids" in results["bad"][-1].error
    assert results["good"][-1].finish_reason == "length"
    assert results["good"][-1].completion_tokens == 6


def test_prefix_reuse_keeps_greedy_answers_exact(model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    system = "You are a careful assistant. Answer in one short sentence.\n"
    document = "The quick brown fox jumps over the lazy dog. " * 12 + "Summarize the text above:"
    prompts = {  # name: (arrival step, prompt)
        "france": (0, system + "What is the capital of France?"),
        "reader": (0, document),
        "twin": (0, document + " In one word:"),  # with the reader: waits for its start, copies
        "spain": (40, system + "What is the capital of Spain?"),  # starts like a finished one
        "second-reader": (14, document + " In five words:"),  # while the reader still runs
        "reader-again": (80, document),  # after the reader ended: all but its last token
    }
    answers = {}
    for caching in (False, True):
        # Empty caches: what the first run left in a row must not stand in for a missed copy.
        model_runner_fp32.model.k_cache.zero_()
        model_runner_fp32.model.v_cache.zero_()
        arrivals = {}
        for name, (step, prompt) in prompts.items():
            max_tokens = 32 if name == "reader" else 12
            arrivals.setdefault(step, []).append(
                Submit(name, tokenizer(prompt)["input_ids"], greedy(max_tokens, ignore_eos=True)))
        answers[caching] = run(make_engine(model_runner_fp32, prefix_caching=caching), arrivals)
    cached = {name: outs[0].cached_tokens for name, outs in answers[True].items()}
    length = {name: len(tokenizer(prompt)["input_ids"]) for name, (_, prompt) in prompts.items()}
    assert all(outs[0].cached_tokens == 0 for outs in answers[False].values())
    assert cached["france"] == cached["reader"] == 0
    assert cached["spain"] >= len(tokenizer(system)["input_ids"]) - 1
    assert cached["second-reader"] >= length["reader"] - 1  # copied from the running row
    assert cached["twin"] >= length["reader"] - 1
    assert cached["reader-again"] == length["reader"] - 1
    for name in prompts:
        assert text_of(answers[True][name]) == text_of(answers[False][name]), name
