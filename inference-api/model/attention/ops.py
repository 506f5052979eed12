"""Attention arithmetic in torch ops: masks, grouped-query attention, one row read in place.

Shapes are noted per function; K is stored transposed ([dim, L]) so `q @ K` multiplies by a
plain row-major matrix.
"""
from __future__ import annotations

import torch


def position_mask(q_pos: torch.Tensor, kv_len: int, window: int | None,
                  dtype=torch.float32) -> torch.Tensor:
    """Additive mask [*q_pos.shape, kv_len]: 0 where a query may see the key, else -inf."""
    kv_pos = torch.arange(kv_len, device=q_pos.device)
    visible = kv_pos <= q_pos[..., None]  # causal, and hides stale cache beyond the position
    if window is not None:
        visible &= kv_pos > q_pos[..., None] - window
    zero = torch.zeros((), dtype=dtype, device=q_pos.device)
    return torch.where(visible, zero, float("-inf"))


# Scores stay in the model's dtype with the mask added in place (0 and -inf are exact in any
# dtype); softmax computes in float32 internally for bfloat16/float16 inputs and rounds once,
# which gives the same probabilities as transformers' softmax(dtype=float32).to(dtype).

def softcap(scores: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(scores / cap), in place, in transformers' order of ops (Gemma 2's attention
    scores and final logits); scores as they are when cap is None."""
    return scores if cap is None else scores.div_(cap).tanh_().mul_(cap)


def attend(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
           out: torch.Tensor, cap: float | None = None) -> None:
    """Attention of grouped queries q [b, kv_heads, n, dim] over k_t [b, kv_heads, dim, L] and
    v [b, kv_heads, L, dim] with an additive mask broadcastable to [b, kv_heads, n, L], written
    into `out` (contiguous, like q).

    Scores are soft-capped at `cap` before the mask where given (Gemma 2). Several query heads
    share one kv head, so q stacks the group's queries along n and K/V are
    never repeated. K and V must be contiguous: a batched matmul copies strided operands.
    """
    b, kv, n, _ = q.shape
    scores = softcap(torch.bmm(q.flatten(0, 1), k_t.flatten(0, 1)).view(b, kv, n, -1), cap)
    scores += mask
    probs = torch.softmax(scores, dim=-1)
    torch.bmm(probs.flatten(0, 1), v.flatten(0, 1), out=out.view(b * kv, n, -1))


def attend_row(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               cap: float | None = None) -> torch.Tensor:
    """Attention of queries q [kv_heads, n, dim] over one cache row read in place:
    k_t [kv_heads, dim, L] and v [kv_heads, L, dim], slices of the cache, mask [n, L].

    A plain matmul reads a strided 2-D slice as it is, so going head by head never copies the
    row's cache (at a context of ~1000 this is about twice as fast as one batched matmul).
    """
    out = torch.empty_like(q)
    for head in range(q.shape[0]):
        scores = softcap(torch.mm(q[head], k_t[head]), cap)  # [n, L]
        scores += mask
        torch.mm(torch.softmax(scores, dim=-1), v[head], out=out[head])
    return out
