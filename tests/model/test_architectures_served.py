"""Each architecture as the backend serves it: a tiny random model saved to a folder, loaded by
MODEL_PATH through the weight cache into the real runner and engine, answers 64 greedy tokens
exactly as transformers generates them, with log probabilities within 1e-4 of its float32
logits': prompts arriving while others decode (rows of different lengths in one step), prompts
prefilled in chunks, with prefix reuse on and off, on our CPU kernel and on torch ops."""
import pytest

from inference_api.config import Config
from inference_api.model.runner import ModelRunner
from inference_api.process_messages import Submit
from real_engine import greedy, make_engine, run
from tiny_architectures import ARCHITECTURES, TOKENS, encode, save, transformers_answers

BASE = "The quick brown fox jumps over the lazy dog"
# Two prompts share a long prefix (reused when prefix caching is on), one is a single token;
# all shorter than Phi-3's original context, where transformers' prefill uses one rope for all.
PROMPTS = [BASE, BASE + " (!)", "Q", "def f(x): return x * 2  # doubles"]
ARRIVALS = [0, 4, 5, 9]  # steps at which they arrive: mid-prefill and mid-decode of others


@pytest.fixture(scope="module", params=ARCHITECTURES)
def served(request, tmp_path_factory):
    """(the transformers model, its folder, its answers to PROMPTS): once per architecture."""
    folder = tmp_path_factory.mktemp(request.param)
    hf_model = save(request.param, folder)
    return hf_model, folder, [transformers_answers(hf_model, encode(p)) for p in PROMPTS]


@pytest.mark.parametrize("attention", ["native", "torch"])
def test_greedy_tokens_and_logprobs_equal_transformers(served, attention, tmp_path,
                                                       monkeypatch):
    hf_model, folder, expected = served
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a weight cache of this test's own
    runner = ModelRunner(Config(model_path=str(folder), dtype="float32", device="cpu",
                                max_users=4, max_seq_len=128, decode_attention=attention))
    assert runner.info["architecture"] == hf_model.config.architectures[0]
    for prefix_caching in (True, False):
        engine = make_engine(runner, prefill_budget=8, prefix_caching=prefix_caching)
        arrivals = {}
        for i, (prompt, step) in enumerate(zip(PROMPTS, ARRIVALS)):
            # Prompt log probabilities for all but the prompt that may reuse another's prefix
            # (a prompt whose every position is scored is prefilled whole).
            params = greedy(TOKENS, ignore_eos=True, logprobs=1,
                            prompt_logprobs=None if i == 1 else 1)
            arrivals.setdefault(step, []).append(Submit(f"p{i}", encode(prompt), params))
        results = run(engine, arrivals)
        for i, (tokens, logprobs, prompt_logprobs) in enumerate(expected):
            outs = results[f"p{i}"]
            got = [lp for out in outs for lp in out.logprobs or []]
            where = f"prompt {i}, prefix caching {prefix_caching}"
            assert [lp.token_id for lp in got] == tokens, where
            assert [lp.logprob for lp in got] == pytest.approx(logprobs, abs=1e-4), where
            if i != 1:
                first = next(out for out in outs if out.prompt_logprobs is not None)
                got_prompt = [lp.logprob for lp in first.prompt_logprobs[1:]]
                assert got_prompt == pytest.approx(prompt_logprobs, abs=1e-4), where
        reused = next(o.cached_tokens for o in results["p1"] if o.cached_tokens is not None)
        assert (reused > 0) == prefix_caching  # the shared prefix was copied, or not


# The families with the most switches in the weight cache's meta stand for all.
@pytest.mark.parametrize("name", ["gemma3", "phi3", "smollm3"])
def test_a_restart_from_the_weight_cache_answers_the_same(name, tmp_path, monkeypatch):
    folder = tmp_path / name
    hf_model = save(name, folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    answers = []
    for _ in range(2):  # converted and written, then read back from the cache
        runner = ModelRunner(Config(model_path=str(folder), dtype="float32", device="cpu",
                                    max_users=2, max_seq_len=128))
        results = run(make_engine(runner), {0: [Submit("a", encode(BASE), greedy(TOKENS,
                                                                                 ignore_eos=True,
                                                                                 logprobs=0))]})
        answers.append([lp.token_id for out in results["a"] for lp in out.logprobs or []])
    assert list((tmp_path / "inference-api" / "weights").glob("*.pt"))
    assert answers[0] == answers[1] == transformers_answers(hf_model, encode(BASE))[0]
