"""Sampling defaults: the model's generation config where it has one, else documented ones."""
from __future__ import annotations

import statistics

import pytest

from helpers import MODEL
from inference_api.sampling_params import FALLBACK_DEFAULTS, sampling_defaults
from test_openai import client_for


def test_a_model_without_sampling_defaults_gets_the_documented_ones():
    assert sampling_defaults({}) == {"temperature": 0.7, "top_k": 40, "top_p": 0.9}
    assert sampling_defaults({"bos_token_id": 1, "eos_token_id": 2}) == FALLBACK_DEFAULTS


def test_a_models_own_defaults_win_and_only_those_it_gives():
    assert sampling_defaults({"temperature": 0.2, "top_p": 0.95, "eos_token_id": 2}) == {
        "temperature": 0.2, "top_p": 0.95}
    assert sampling_defaults({"do_sample": False}) == {"temperature": 0.0}


def mean_logprob(client, **sampling) -> float:
    """The mean log probability, under the model, of the tokens sampled for README's question."""
    result = client.chat.completions.create(
        model=MODEL, n=8, seed=1, max_tokens=40, logprobs=True,
        messages=[{"role": "user", "content": "What is the capital of France?"}], **sampling)
    return statistics.mean(t.logprob for c in result.choices for t in c.logprobs.content)


@pytest.mark.slow
def test_left_out_fields_take_the_defaults_and_give_likelier_text(real_server):
    client = client_for(real_server).with_options(timeout=600)  # CI may share the machine
    defaults = mean_logprob(client)
    whole_vocabulary = mean_logprob(client, temperature=1.0, top_p=1.0,
                                    extra_body={"top_k": 0})
    same_as_defaults = mean_logprob(client, temperature=0.7, top_p=0.9, extra_body={"top_k": 40})
    # The defaults were applied: the same seeds give the same tokens as asking for them.
    assert defaults == pytest.approx(same_as_defaults, abs=1e-6)
    # At temperature 1 over the whole vocabulary a small model wanders into unlikely tokens.
    assert defaults > whole_vocabulary + 0.3, (defaults, whole_vocabulary)
