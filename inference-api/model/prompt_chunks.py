"""A step's prompt chunks: where each sits among the step's tokens, and its causal attention over
its own cache row (torch ops, or in batch-invariant mode the decode kernel position by position)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention.ops import attend_row, position_mask
from .attention.torch_decode import kv_extent


@dataclass
class PromptChunk:
    """One prefill chunk of a step: its row, sequence start and offset among the step's tokens."""

    row: int
    start: int
    offset: int
    n: int
    kv_len: int = 0  # cache positions read: start + n rounded up to the KV bucket
    masks: dict | None = None  # sliding window -> additive mask [groups * n, kv_len]


class PromptAttention:
    """Causal attention of prompt chunks, each over its row's cache after writing its keys and
    values there; shared by all layers of a model."""

    def __init__(self, kv_heads: int, groups: int, head_dim: int, max_seq_len: int,
                 kv_bucket: int, windows: set, softcap: float | None, batch_invariant: bool):
        self.kv_heads, self.groups, self.head_dim = kv_heads, groups, head_dim
        self.max_seq_len, self.kv_bucket, self.windows = max_seq_len, kv_bucket, windows
        self.softcap, self.batch_invariant = softcap, batch_invariant

    def layouts(self, prefills: list, offset: int, dtype, device) -> list[PromptChunk]:
        """The step's chunks after its `offset` decode tokens, each with its masks, one per
        distinct sliding window (none in batch-invariant mode: the kernel needs none)."""
        chunks = []
        for p in prefills:
            c = PromptChunk(p.row, p.start, offset, p.tokens.numel())
            offset += c.n
            if not self.batch_invariant:
                q_pos = torch.arange(c.start, c.start + c.n, device=device)
                c.kv_len = kv_extent(c.start + c.n, self.max_seq_len, self.kv_bucket)
                c.masks = {w: position_mask(q_pos, c.kv_len, w, dtype).repeat(self.groups, 1)
                           for w in self.windows}  # [groups * c, L], queries ordered as in run
            chunks.append(c)
        return chunks

    def run(self, attention, q, k, v, k_cache, v_cache, c: PromptChunk, window, out) -> None:
        """One chunk in one layer: k/v [c, kv, dim] into the layer's cache at its row, then q
        [c, heads, dim] attended into out (like q)."""
        n, shape = c.n, (c.n, self.kv_heads, self.groups, self.head_dim)
        attention.write_prompt_keys(k_cache, c.row, c.start, k)
        attention.write_prompt_values(v_cache, c.row, c.start, v)
        if self.batch_invariant:
            attention.attend_prompt(q.view(shape), k_cache, v_cache, c.row, c.start, window,
                                    out.view(shape))
            return
        # [c, heads, dim] -> [kv, groups * c, dim]: a group's queries share their kv head
        qc = q.view(shape).permute(1, 2, 0, 3).reshape(self.kv_heads, self.groups * n, -1)
        keys = attention.prompt_keys(k_cache, c.row, c.kv_len)  # [kv, dim, kv_len]
        o = attend_row(qc, keys, attention.prompt_values(v_cache, c.row, c.kv_len),
                       c.masks[window], self.softcap)
        out.view(shape).copy_(o.view(self.kv_heads, self.groups, n, -1).permute(2, 0, 1, 3))
