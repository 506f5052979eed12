"""Sampling defaults: the model's generation config where it has one, else documented ones."""
from __future__ import annotations

import statistics

import pytest

from helpers import MODEL, client_for
from inference_api.sampling_params import FALLBACK_DEFAULTS, sampling_defaults


def test_a_model_without_sampling_defaults_gets_the_documented_ones():
    assert sampling_defaults({}) == {"temperature": 0.7, "top_k": 40, "top_p": 0.9}
    assert sampling_defaults({"bos_token_id": 1, "eos_token_id": 2}) == FALLBACK_DEFAULTS


def test_a_models_own_defaults_win_and_only_those_it_gives():
    assert sampling_defaults({"temperature": 0.2, "top_p": 0.95, "eos_token_id": 2}) == {
        "temperature": 0.2, "top_p": 0.95}
    assert sampling_defaults({"do_sample": False}) == {"temperature": 0.0}


def sampled(client, **sampling) -> tuple[list[str], float]:
    """The texts sampled for README's question, and the mean log probability of their tokens."""
    result = client.chat.completions.create(
        model=MODEL, n=8, seed=1, max_tokens=40, logprobs=True,
        messages=[{"role": "user", "content": "What is the capital of France?"}], **sampling)
    mean = statistics.mean(t.logprob for c in result.choices for t in c.logprobs.content)
    return [c.message.content for c in result.choices], mean


@pytest.mark.slow
def test_left_out_fields_take_the_defaults_and_give_likelier_text(real_server):
    client = client_for(real_server).with_options(timeout=600)  # CI may share the machine
    texts, defaults = sampled(client)
    _, whole_vocabulary = sampled(client, temperature=1.0, top_p=1.0, extra_body={"top_k": 0})
    same_texts, same_as_defaults = sampled(client, temperature=0.7, top_p=0.9,
                                           extra_body={"top_k": 40})
    # The defaults were applied: the same seeds give the same tokens as asking for them. In
    # bfloat16 a step's sums depend on what runs beside it (prompt chunks sized by the step's
    # measured time, rows from the cache), so a draw that falls within that noise of a boundary
    # may pick another token: most texts, not all, are equal, and the means nearly so.
    assert sum(a == b for a, b in zip(texts, same_texts)) >= 6, (texts, same_texts)
    assert defaults == pytest.approx(same_as_defaults, abs=0.02)
    # At temperature 1 over the whole vocabulary a small model wanders into unlikely tokens.
    assert defaults > whole_vocabulary + 0.3, (defaults, whole_vocabulary)
