"""Each architecture transformers' GGUF loader reads, served from a .gguf file: the file is
converted once (MODEL_PATH=<file>.gguf) and the runner answers 64 greedy tokens exactly as
transformers' own model loaded from the same file generates them, log probabilities within
1e-4, on our CPU kernel and on torch ops."""
import pytest
import torch

from inference_api.config import Config
from inference_api.model.runner import ModelRunner
from inference_api.process_messages import Submit
from real_engine import greedy, make_engine, run
from tiny_architectures import TOKENS, build, encode, transformers_answers
from tiny_gguf import write_gguf

PROMPTS = ["The quick brown fox jumps over", "Hi", "for i in range(3): print(i)"]
# GGUF stores no head size for Qwen3: the loader takes Qwen3Config's (128), as the real ones.
FAMILIES = {"llama": {}, "qwen2": {}, "qwen3": {"head_dim": 128}, "phi3": {}, "gemma2": {},
            "gemma3": {}}


@pytest.fixture(scope="module", params=FAMILIES)
def gguf_file(request, tmp_path_factory):
    """(the .gguf file, transformers' model loaded from it, its answers to PROMPTS)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp(request.param)
    path = write_gguf(build(request.param, **FAMILIES[request.param]), folder / "tiny.gguf")
    reference = AutoModelForCausalLM.from_pretrained(folder, gguf_file=path.name,
                                                     dtype=torch.float32).eval()
    return path, reference, [transformers_answers(reference, encode(p)) for p in PROMPTS]


@pytest.mark.parametrize("attention", ["native", "torch"])
def test_gguf_greedy_tokens_equal_transformers(gguf_file, attention, tmp_path, monkeypatch):
    path, reference, expected = gguf_file
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runner = ModelRunner(Config(model_path=str(path), model_cache_dir=str(tmp_path / "models"),
                                dtype="float32", device="cpu", max_users=4, max_seq_len=128,
                                decode_attention=attention))
    assert runner.info["architecture"] == type(reference).__name__
    arrivals = {3 * i: [Submit(f"p{i}", encode(p), greedy(TOKENS, ignore_eos=True, logprobs=0))]
                for i, p in enumerate(PROMPTS)}
    results = run(make_engine(runner, prefill_budget=8), arrivals)
    for i, (prompt, (tokens, logprobs, _)) in enumerate(zip(PROMPTS, expected)):
        got = [lp for out in results[f"p{i}"] for lp in out.logprobs or []]
        assert [lp.token_id for lp in got] == tokens, prompt
        assert [lp.logprob for lp in got] == pytest.approx(logprobs, abs=1e-4), prompt
