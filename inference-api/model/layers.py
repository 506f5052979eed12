"""The decoder's small pure functions: RMSNorm and rotary embeddings, as transformers computes them."""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             gemma: bool = False) -> torch.Tensor:
    """RMSNorm over the last dim in float32, exactly as transformers does: cast back before the
    weight multiply (Llama's), or, for Gemma's norms, times (1 + weight) in float32, cast once."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if gemma:
        return (xf * (1.0 + weight.float())).to(x.dtype)
    return weight * xf.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half convention) of x [T, heads, dim]; cos/sin [T, 1, rot]: the
    first rot dims rotate, the others pass (partial rotary, Phi-3)."""
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        return torch.cat((rotate(x[..., :rot], cos, sin), x[..., rot:]), dim=-1)
    half = rot // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
