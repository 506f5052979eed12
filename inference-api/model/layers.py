"""The decoder's small pure functions: RMSNorm and rotary embeddings, as transformers computes them."""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32, cast back before the weight multiply, exactly as transformers does."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half convention) of x [T, heads, dim]; cos/sin [T, 1, dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rope_tables(inv_freq: torch.Tensor, scaling: float, max_seq_len: int, dtype) -> tuple:
    """cos/sin [max_seq_len, head_dim] for every position, computed in float32 like transformers."""
    positions = torch.arange(max_seq_len, device=inv_freq.device, dtype=torch.float32)
    freqs = positions[:, None] * inv_freq.float()[None, :]  # [seq, dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [seq, dim]
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)
