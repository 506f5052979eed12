"""A step's rows and positions checked against the KV cache before anything is written."""
from __future__ import annotations

import torch


def check_bounds(decode_rows: torch.Tensor, decode_positions: torch.Tensor, prefills: list,
                 max_rows: int, max_seq_len: int) -> None:
    """IndexError for rows/positions outside the cache, instead of writing out of bounds."""
    if decode_rows.numel():
        if int(decode_rows.min()) < 0 or int(decode_rows.max()) >= max_rows:
            raise IndexError("decode row outside the cache")
        if int(decode_positions.min()) < 0 or int(decode_positions.max()) >= max_seq_len:
            raise IndexError("decode position outside the cache")
    for c in prefills:
        if not 0 <= c.row < max_rows or c.start < 0 or c.tokens.numel() == 0 \
                or c.start + c.tokens.numel() > max_seq_len:
            raise IndexError(f"prefill chunk (row {c.row}, start {c.start}) outside the cache")
