"""A structured-output row in a full batch of the real model: it validates, the others do not change."""
from __future__ import annotations

import json

import jsonschema
import pytest

from inference_api.serving.grammars import grammar_for_json_schema
from inference_api.sampling_params import SamplingParams
from inference_api.process_messages import Submit
from helpers import PERSON
from real_engine import PROMPTS, greedy, make_engine, run, text_of

pytestmark = pytest.mark.slow


def batch(tokenizer, constrained: SamplingParams, rows: int) -> dict[int, list[Submit]]:
    """rows - 1 greedy prompts and one more with the given parameters, all at step 0."""
    submits = [Submit(f"plain{i}", tokenizer(PROMPTS[i % len(PROMPTS)])["input_ids"], greedy(24))
               for i in range(rows - 1)]
    ask = tokenizer("A person as JSON:")["input_ids"]
    return {0: submits + [Submit("shaped", ask, constrained)]}


def test_one_constrained_row_beside_31_leaves_the_others_unchanged(model_runner_fp32,
                                                                   hf_model_fp32):
    _, tokenizer = hf_model_fp32
    rows = model_runner_fp32.model.max_rows
    assert rows == 32
    shaped = SamplingParams(max_tokens=120, temperature=1.0, seed=9,
                            grammar=grammar_for_json_schema(PERSON))
    with_grammar = run(make_engine(model_runner_fp32, prefix_caching=False),
                       batch(tokenizer, shaped, rows))
    without = run(make_engine(model_runner_fp32, prefix_caching=False),
                  batch(tokenizer, greedy(120), rows))
    jsonschema.validate(json.loads(text_of(with_grammar["shaped"])), PERSON)
    assert with_grammar["shaped"][-1].finish_reason in ("eos", "length")
    for i in range(rows - 1):
        session = f"plain{i}"
        assert text_of(with_grammar[session]) == text_of(without[session]), session
        assert with_grammar[session][-1].finish_reason == without[session][-1].finish_reason
