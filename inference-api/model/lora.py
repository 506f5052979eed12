"""LoRA adapters applied per row in the batched forward pass, without merging any weights.

Every row of the KV cache runs with one adapter or none, set when a request takes the row. In a
step, the tokens are grouped by their row's adapter once (as S-LoRA and Punica batch them), and
after each of the base model's linear products every adapter adds its low-rank product to its
own tokens' outputs: out[idx] += x[idx] @ A^T @ B^T * scaling (in float32, as PEFT does). The
base product is computed once for all rows, as without adapters; rows without one cost nothing
more, and an adapter costs two thin products per linear layer for its tokens alone.

The stacked layers (qkv, gate_up) take one product per adapter: the adapter's A matrices of
the stacked modules concatenated [r_q + r_k + r_v, in], and its B matrices block-diagonal
[q + kv + kv, r_q + r_k + r_v], zero where a module is not targeted.
"""
from __future__ import annotations

import torch

from .adapter_files import TARGETS, BaseShapes, LoraAdapter

NO_ADAPTER = -1


class LoraSet:
    """The served adapters' weights (float32), each row's adapter, and the step's tokens
    grouped by adapter."""

    def __init__(self, adapters: list[LoraAdapter], base: BaseShapes, max_rows: int, device):
        self.names = [a.name for a in adapters]  # slot -> name
        self.scalings = [a.scaling for a in adapters]  # slot -> lora_alpha / r (or / sqrt(r))
        # [slot][layer][linear] -> (A [R, in], B [out, R]), absent where not targeted
        self.products = [[_stack(adapter, layer, base, device)
                          for layer in range(base.layers)] for adapter in adapters]
        self.row_slot = torch.full((max_rows,), NO_ADAPTER, dtype=torch.long, device=device)
        self.groups: list[tuple[int, torch.Tensor | None]] = []  # this step's (slot, tokens)

    def assign(self, row: int, name: str | None) -> None:
        """The adapter of a row's request from now on (None: the base model); ValueError for a
        name that is not served."""
        if name is not None and name not in self.names:
            raise ValueError(f"the model {name!r} is not served here")
        self.row_slot[row] = NO_ADAPTER if name is None else self.names.index(name)

    def begin_step(self, token_rows: torch.Tensor) -> None:
        """Group the step's tokens by adapter: token_rows [T] is the row of each token, in the
        order the forward pass holds them. A group of every token holds None (no gather)."""
        slots = self.row_slot[token_rows]  # [T]
        self.groups = []
        for slot in torch.unique(slots).tolist():
            if slot == NO_ADAPTER:
                continue
            index = torch.nonzero(slots == slot).flatten()  # [t] tokens of this adapter
            self.groups.append((slot, None if index.numel() == slots.numel() else index))

    def add(self, layer: int, linear: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out [T, out] (the base product of x [T, in]) with each adapter's product added to
        its tokens' rows, in place. As PEFT does, the product is computed in float32 and added
        to the base product in float32, rounded to the model's dtype once."""
        for slot, index in self.groups:
            product = self.products[slot][layer].get(linear)
            if product is None:
                continue
            a, b = product  # float32
            rows = x if index is None else x.index_select(0, index)
            delta = ((rows.float() @ a.T) @ b.T).mul_(self.scalings[slot])  # [t, out]
            if index is None:
                out.copy_(out.float() + delta)
            else:
                out.index_copy_(0, index, (out.index_select(0, index).float() + delta)
                                .to(out.dtype))
        return out


def token_rows(decode_rows: torch.Tensor | None, chunks, device) -> torch.Tensor:
    """The row of each of a step's tokens [T]: the decoding rows in the order given, then each
    prompt chunk's row once per token (chunks: objects with .row and .n)."""
    parts = [] if decode_rows is None else [decode_rows]
    parts += [torch.full((c.n,), c.row, dtype=torch.long, device=device) for c in chunks]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device=device)


def _stack(adapter: LoraAdapter, layer: int, base: BaseShapes, device) -> dict:
    """One layer's products of one adapter, per linear layer it changes: (A, B), in
    float32 whatever the model's dtype (the products are small; PEFT keeps them so too)."""
    products = {}
    for linear in ("qkv", "o", "gate_up", "down"):
        modules = [m for m, (target, _) in TARGETS.items() if target == linear]
        found = [(TARGETS[m][1], adapter.weights[(layer, m)]) for m in modules
                 if (layer, m) in adapter.weights]
        if not found:
            continue
        parts = base.parts(linear)
        offsets = [sum(parts[:i]) for i in range(len(parts))]
        a = torch.cat([pair[0] for _, pair in found]).to(device, torch.float32)  # [R, in]
        b = torch.zeros(sum(parts), a.shape[0], device=device)  # [out, R], block-diagonal
        column = 0
        for part, (_, lora_b) in found:
            rank = lora_b.shape[1]
            b[offsets[part]:offsets[part] + parts[part], column:column + rank] = \
                lora_b.to(device, torch.float32)
            column += rank
        products[linear] = (a.contiguous(), b.contiguous())
    return products
