"""Rotary embeddings' frequencies and tables for every rope scaling transformers has for the
families we run: default, linear, dynamic (NTK), yarn, longrope and llama3.

The formulas are transformers' (modeling_rope_utils), computed with the same float32 ops, so
that the tables are its tables to the bit; they are ours so that a restart from the weight cache
needs no transformers. A model's rope is described by plain values (`params`, kept in the
weight cache's meta): its rope_parameters with the head size, the rotated dims and the context
length the model was configured with.

Two scalings depend on the sequence's length in transformers: dynamic recomputes its base once
a sequence passes max_position_embeddings, and longrope switches from its short to its long
factors once it passes original_max_position_embeddings. Both decide by the largest position of
the forward call, so a cached key keeps the rotation of the call that wrote it. Here each position
has the frequencies of a sequence that ends at it: what transformers does when it generates
token by token from a prompt within the original length, and what its whole-sequence forward
does wherever the sequence stays within it.
"""
from __future__ import annotations

import math

import torch

SCALINGS = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


def rope_params(config, rope_parameters: dict, head_dim: int) -> dict:
    """The plain values our tables need, from a transformers config and one of its (standardized)
    rope_parameters dicts. ValueError for a rope type we do not compute."""
    params = {k: v for k, v in rope_parameters.items() if v is not None}
    params.setdefault("rope_type", "default")
    if params["rope_type"] not in SCALINGS:
        raise ValueError(f"rope type {params['rope_type']!r} is not supported; "
                         f"supported: {', '.join(SCALINGS)}")
    factor = params.get("partial_rotary_factor",
                        getattr(config, "partial_rotary_factor", None) or 1.0)
    params.update(head_dim=head_dim, rotary_dim=int(head_dim * factor),
                  max_position_embeddings=config.max_position_embeddings)
    return params


def inv_freq(params: dict, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [rotary_dim / 2], attention scaling) as transformers' init function
    for the rope type gives them for a sequence of seq_len (None: its initial ones)."""
    kind, base, dim = params["rope_type"], params["rope_theta"], params["rotary_dim"]
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim
    if kind == "dynamic":
        longest = params["max_position_embeddings"]
        if seq_len is not None:  # transformers computes this one in 0-d tensors
            seq = torch.maximum(torch.tensor(seq_len), torch.tensor(longest))
            base = base * ((params["factor"] * seq / longest) - (params["factor"] - 1)) ** (
                dim / (dim - 2))
        else:
            base = base * ((params["factor"] * longest / longest) - (params["factor"] - 1)) ** (
                dim / (dim - 2))
        return 1.0 / (base ** exponents), 1.0
    if kind == "yarn":
        return _yarn(params, base, dim)
    if kind == "longrope":
        return _longrope(params, base, dim, seq_len)
    freq = 1.0 / (base ** exponents)
    if kind == "linear":
        freq /= params["factor"]
    elif kind == "llama3":
        freq = _llama3(params, freq)
    return freq, 1.0


def rope_tables(params: dict, max_seq_len: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [max_seq_len, rotary_dim] for every position, in float32 like transformers,
    scaled by the attention scaling, then cast to the model's dtype."""
    freq, scaling = inv_freq(params)
    per_position = freq[None, :].expand(max_seq_len, -1).clone()  # [seq, dim/2]
    start = _length_dependent_from(params)
    for position in range(start, max_seq_len):  # the frequencies of a sequence ending here
        per_position[position] = inv_freq(params, position + 1)[0]
    positions = torch.arange(max_seq_len, dtype=torch.float32)
    freqs = positions[:, None] * per_position  # [seq, dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def _length_dependent_from(params: dict) -> int:
    """The first position whose frequencies differ from the initial ones (beyond any table)."""
    if params["rope_type"] == "dynamic":
        return params["max_position_embeddings"]
    if params["rope_type"] == "longrope":
        return params["original_max_position_embeddings"]
    return 1 << 62


def _llama3(params: dict, freq: torch.Tensor) -> torch.Tensor:
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_context = params["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / freq
    scaled = torch.where(wavelen > low_wavelen, freq / factor, freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn(params: dict, base: float, dim: int) -> tuple[torch.Tensor, float]:
    factor = params.get("factor")
    original = params["original_max_position_embeddings"]
    if factor is None:
        factor = params["max_position_embeddings"] / original

    def get_mscale(scale, mscale=1):
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
    if attention_factor is None:
        attention_factor = (float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
                            if mscale and mscale_all_dim else get_mscale(factor))
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def correction_dim(rotations):
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a division by zero
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp
    freq = (interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor)
    return freq, attention_factor


def _longrope(params: dict, base: float, dim: int, seq_len) -> tuple[torch.Tensor, float]:
    original = params["original_max_position_embeddings"]
    factor = params.get("factor")
    if factor is None:
        factor = params["max_position_embeddings"] / original
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(
            1 + math.log(factor) / math.log(original))
    long = seq_len and seq_len > original
    ext = torch.tensor(params["long_factor" if long else "short_factor"], dtype=torch.float32)
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * base ** shape), attention_factor
