"""Batch invariance (BATCH_INVARIANT=1): a row's numbers never depend on what runs beside it.

The matrix library picks its blocking, and with it the order of a product's additions, by the
shape of the whole batch: a row multiplied among 5 rows and among 40 gets other bits in its last
places, which greedy decoding turns into other words. Over a fixed shape the order is fixed: the
products here run over tiles of TILE_ROWS rows, the last one padded, so that each row's result
depends on that row alone (measured: a row's output is the same bits at any place in the tile,
beside any other rows). The attention of a prompt's positions runs through the decode kernel,
one position at a time over its own cache row, exactly as a decode step computes it: a position's
keys and values come out the same whether its prompt was prefilled whole, in chunks of any size,
or copied from another row that decoded it.
"""
from __future__ import annotations

import torch

# Rows of every product: the default number of rows, so a full decode step is one tile.
TILE_ROWS = 32


class FixedRowsLinear:
    """A linear layer (Linear or Int8Linear) applied tile by tile over TILE_ROWS rows."""

    def __init__(self, inner):
        self.inner = inner
        self.out_features, self.packed = inner.out_features, inner.packed
        self._padded = None  # [TILE_ROWS, in] scratch for the last, partial tile

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[T, in] -> [T, out]."""
        t = x.shape[0]
        if t == TILE_ROWS:
            return self.inner(x)
        out = None
        for start in range(0, t, TILE_ROWS):
            n = min(TILE_ROWS, t - start)
            tile = self.inner(x[start:start + n] if n == TILE_ROWS else self._pad(x[start:]))
            if out is None:
                out = tile.new_empty(t, tile.shape[1])
            out[start:start + n] = tile[:n]
        return out

    def _pad(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [n < TILE_ROWS, in] in the first n rows of a tile whose other rows are zeros."""
        if self._padded is None or self._padded.dtype != rows.dtype \
                or self._padded.device != rows.device:
            self._padded = rows.new_zeros(TILE_ROWS, rows.shape[1])
        self._padded[:rows.shape[0]] = rows
        self._padded[rows.shape[0]:] = 0
        return self._padded


def tile_products(layers: list, lm_head):
    """Every layer's products (changed in place) and the lm_head over fixed tiles of rows; the
    lm_head's tiled layer."""
    for layer in layers:
        for name in ("qkv", "o", "gate_up", "down"):
            setattr(layer, name, FixedRowsLinear(getattr(layer, name)))
    return FixedRowsLinear(lm_head)


def attention_choice(choice: str) -> str:
    """DECODE_ATTENTION in batch-invariant mode: the CPU kernel, which computes prompts'
    positions as decode steps do, or an error where it is not to be used or cannot run."""
    if choice == "torch":
        raise ValueError("BATCH_INVARIANT=1 needs the CPU attention kernel, "
                         "not DECODE_ATTENTION=torch")
    return "native"
