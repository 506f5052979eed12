"""QUANTIZATION=int8 on the engine: the real default model serves with int8 products and starts
its greedy answers as the exact path does; where int8 cannot run, the start fails at once with
one line naming the setting."""
from __future__ import annotations

import pytest

from inference_api.backend.build import build_engine
from inference_api.config import Config
from inference_api.model import quantized, runner
from inference_api.model.quantized import Int8Linear, QuantizationUnavailable
from inference_api.process_messages import Submit
from inference_api.sampling_params import SamplingParams
from int8_dtypes import int8_dtype_name, needs_int8
from real_engine import PROMPTS, make_engine, run, text_of

TOKENS = 16


def greedy_answers(model_runner) -> list[tuple[list[int], list[float], str]]:
    """Each of PROMPTS run together, greedy: the token ids, their log probabilities, the text."""
    params = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True, logprobs=0)
    submits = [Submit(f"s{i}", model_runner.tokenizer.encode(p).ids, params)
               for i, p in enumerate(PROMPTS)]
    results = run(make_engine(model_runner), {0: submits})
    answers = []
    for i in range(len(PROMPTS)):
        outs = results[f"s{i}"]
        found = [lp for out in outs for lp in (out.logprobs or [])]
        assert outs[-1].completion_tokens == TOKENS and outs[-1].finish_reason == "length"
        answers.append(([lp.token_id for lp in found], [lp.logprob for lp in found],
                        text_of(outs)))
    return answers


@pytest.mark.slow
@needs_int8
def test_int8_serves_and_starts_its_greedy_answers_as_the_exact_path():
    """The exact path and int8 on the same 8 prompts in one batch (both in the default dtype,
    but int8 in bfloat16 where it cannot run in float32: CPUs without VNNI). Asserted: every answer is whole; the first tokens agree for at least 6 of the 8
    (7 measured: "List three colors:" differs, where the exact path's own choice has p = 0.18);
    and wherever the exact path is sure of its first token (p > 0.5), int8 picks the same one.
    Nothing here is random (greedy; fixed prompts, rows and steps; int8 sums are exact
    integers), so on one machine the outcome is always the same; the margin below the measured
    agreement is for CPUs whose bfloat16 kernels round differently."""
    exact = runner.ModelRunner(Config(max_users=8, max_seq_len=512))
    want = greedy_answers(exact)
    del exact
    # The default dtype where int8 runs in it, else bfloat16 (float32 on CPUs without VNNI).
    int8 = runner.ModelRunner(Config(max_users=8, max_seq_len=512, dtype=int8_dtype_name(),
                                     quantization="int8"))
    model = int8.model
    assert all(isinstance(p, Int8Linear) for p in [model.lm_head] + [
        getattr(layer, name) for layer in model.layers for name in ("qkv", "o", "gate_up", "down")])
    got = greedy_answers(int8)
    assert all(text.strip() for _, _, text in got)
    same_first = [w[0][0] == g[0][0] for w, g in zip(want, got)]
    assert sum(same_first) >= 6, same_first
    sure = [i for i, (_, logprobs, _) in enumerate(want) if logprobs[0] > -0.693]
    assert sure and all(same_first[i] for i in sure), (sure, same_first)


def test_a_start_where_int8_cannot_run_fails_before_loading_with_one_line(monkeypatch):
    """As on a torch build without oneDNN's int8 linear: the backend's start fails with the
    setting named, before the model is converted or loaded (the check comes first)."""
    monkeypatch.setattr(quantized, "_int8_matmul_works", lambda dtype: "no int8 linear here")

    def not_reached(*args, **kwargs):
        raise AssertionError("the model was loaded before the setting was checked")

    monkeypatch.setattr(runner, "prepare_model_folder", not_reached)
    monkeypatch.setattr(runner, "load_model", not_reached)
    with pytest.raises(QuantizationUnavailable) as refused:
        build_engine(Config(quantization="int8", device="cpu"))
    assert str(refused.value) == ("QUANTIZATION=int8 is not available: no int8 linear here; "
                                  "set QUANTIZATION=none")
