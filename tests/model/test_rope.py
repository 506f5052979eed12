"""Our rope tables against transformers' rotary embeddings, to the bit, for every scaling."""
import pytest
import torch
from transformers import LlamaConfig, Phi3Config
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

from inference_api.model.rope import rope_params, rope_tables

HEAD_DIM = 16
COMMON = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=64)
SCALINGS = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 3.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
             "original_max_position_embeddings": 16},
    "yarn-mscale": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0, "mscale": 0.707,
                    "mscale_all_dim": 1.0, "beta_fast": 16, "original_max_position_embeddings": 16},
    "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
    "longrope": {"rope_type": "longrope", "rope_theta": 10000.0,
                 "short_factor": [1.0, 1.1, 1.2, 1.5, 2.0, 2.2, 2.5, 3.0],
                 "long_factor": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
                 "original_max_position_embeddings": 16},
}


def transformers_tables(rotary, config, positions: torch.Tensor):
    """cos, sin at each position as transformers computes them when that position is the last
    one of the forward call (token by token, as generation does)."""
    rows = [rotary(torch.zeros(1, dtype=torch.float32), positions[None, :p + 1]) for p in positions]
    return (torch.stack([cos[0, -1] for cos, _ in rows]),
            torch.stack([sin[0, -1] for _, sin in rows]))


@pytest.mark.parametrize("name", SCALINGS)
def test_tables_equal_transformers_token_by_token(name):
    config = LlamaConfig(**COMMON, rope_parameters=dict(SCALINGS[name]))
    rotary = LlamaRotaryEmbedding(config)
    seq = 96  # past both max_position_embeddings and the original length
    params = rope_params(config, config.rope_parameters, HEAD_DIM)
    cos, sin = rope_tables(params, seq, torch.float32)
    want_cos, want_sin = transformers_tables(rotary, config, torch.arange(seq))
    assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin)
    if name == "longrope":  # short factors within the original length, long ones past it
        assert not torch.equal(cos[20], rope_tables(rope_params(
            config, SCALINGS["default"], HEAD_DIM), seq, torch.float32)[0][20])


def test_whole_sequence_within_the_original_length_equals_transformers():
    for name, parameters in SCALINGS.items():
        config = LlamaConfig(**COMMON, rope_parameters=dict(parameters))
        rotary = LlamaRotaryEmbedding(config)
        cos, sin = rope_tables(rope_params(config, config.rope_parameters, HEAD_DIM), 16,
                               torch.float32)
        want_cos, want_sin = rotary(torch.zeros(1), torch.arange(16)[None])
        assert torch.equal(cos, want_cos[0]) and torch.equal(sin, want_sin[0]), name


def test_partial_rotary_phi3_longrope():
    parameters = dict(SCALINGS["longrope"], partial_rotary_factor=0.5)
    parameters["short_factor"], parameters["long_factor"] = (parameters["short_factor"][:4],
                                                              parameters["long_factor"][:4])
    config = Phi3Config(**COMMON, rope_parameters=parameters)
    rotary = Phi3RotaryEmbedding(config)
    params = rope_params(config, config.rope_parameters, HEAD_DIM)
    assert params["rotary_dim"] == 8
    cos, sin = rope_tables(params, 40, torch.bfloat16)
    want_cos, want_sin = transformers_tables(rotary, config, torch.arange(40))
    assert torch.equal(cos, want_cos.bfloat16()) and torch.equal(sin, want_sin.bfloat16())


def test_unknown_rope_type_is_refused_by_name():
    with pytest.raises(ValueError, match="'mrope'.*supported: default"):
        rope_params(LlamaConfig(**COMMON), {"rope_type": "mrope", "rope_theta": 1.0}, HEAD_DIM)
