"""The 8-bit KV cache (KV_CACHE_DTYPE=int8): keys and values as int8, a float32 scale per row, kv
head and position, quantized as they are written and dequantized as they are read.

Decode attention reads every row's whole cache each step and is bound by memory, so fewer bytes
are what makes it faster: 68 bytes a position and kv head (64 dims) instead of bfloat16's 128.
Both caches are [layers, rows, kv, tiles, 64 + 16 * dim] int8, in tiles of 16 positions: the
tile's 16 positions' float32 scales, then its 16 * dim codes. A key tile's codes are [dim, 16]
(a row's keys one contiguous stream, a dimension's 16 positions one vector in the CPU kernel), a
value tile's [16, dim]. A position's code is symmetric, round(x / scale) with scale = max |x| /
127 over its dims: it depends on that position alone, so chunked prefill, prefix copies and the
kernel (decode_attention.cpp, which quantizes the new token itself the same way) all store the
same bytes. A scale per 16 dims of the keys was measured too (9% more bytes): on 12 documents of
1,024 tokens it took the top-1 agreement with the exact cache from 96.7% to 97.0%, where two
exact bfloat16 runs that only cut the prompt differently agree on 97.7%.

Int8Cache holds what both paths share (allocation, prompt writes, dequantized reads, prefix
copies); Int8DecodeAttention is the torch-ops path over it, for GPUs and CPUs without a compiler.
"""
from __future__ import annotations

import torch

from .torch_decode import DecodeAttention

TILE = 16  # positions per tile
SCALE_BYTES = TILE * 4  # the tile's float32 scales, before its codes


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., dim] as int8 codes [..., dim] and float32 scales [...]: x ~ codes * scale."""
    xf = x.float()
    scale = xf.abs().amax(-1) / 127
    divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(xf / divisor[..., None]).clamp_(-127, 127).to(torch.int8)
    return codes, scale


class Int8Cache:
    """The int8 cache's layout: allocation, writes, dequantized reads and copies between rows.

    Mixed into an attention class that sets `dtype` (the model's: what reads give back),
    `kv_heads` and `head_dim`.
    """

    def allocate_cache(self, layers: int, rows: int, seq: int, device) -> tuple:
        """Zeroed K and V, each [layers, rows, kv, tiles, 64 + 16 * dim] int8 (scales 0, codes
        0: never-written positions read as 0), seq rounded up to whole tiles."""
        shape = (layers, rows, self.kv_heads, -(-seq // TILE), SCALE_BYTES + TILE * self.head_dim)
        return (torch.zeros(shape, dtype=torch.int8, device=device),
                torch.zeros(shape, dtype=torch.int8, device=device))

    def _parts(self, cache: torch.Tensor, keys: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of a cache [..., tiles, bytes]: codes [..., tiles, dim, 16] for keys or [...,
        tiles, 16, dim] for values, and scales [..., tiles, 16] float32."""
        codes = cache[..., SCALE_BYTES:].unflatten(-1, (self.head_dim, TILE) if keys
                                                   else (TILE, self.head_dim))
        return codes, cache[..., :SCALE_BYTES].view(torch.float32)

    def _write(self, cache: torch.Tensor, keys: bool, index: tuple, x: torch.Tensor) -> tuple:
        """Quantize x [n, kv, dim] into one layer's cache [rows, kv, tiles, bytes] at index
        (rows [n], tiles [n], slots [n]); returns its codes and scales."""
        codes, scales = self._parts(cache, keys)
        x_codes, x_scales = quantize(x)
        by_position = codes.permute(0, 2, 4, 1, 3) if keys else codes.permute(0, 2, 3, 1, 4)
        by_position.index_put_(index, x_codes)  # [rows, tiles, 16, kv, dim]
        scales.permute(0, 2, 3, 1).index_put_(index, x_scales)  # [rows, tiles, 16, kv]
        return x_codes, x_scales

    def _write_positions(self, cache, keys, row: int, start: int, x: torch.Tensor) -> None:
        positions = torch.arange(start, start + x.shape[0], device=x.device)
        rows = torch.full_like(positions, row)
        self._write(cache, keys, (rows, positions // TILE, positions % TILE), x)

    def write_prompt_keys(self, k_cache: torch.Tensor, row: int, start: int,
                          k: torch.Tensor) -> None:
        """Store a prompt chunk's keys k [c, kv, dim] at positions start.. of one layer's row."""
        self._write_positions(k_cache, True, row, start, k)

    def write_prompt_values(self, v_cache: torch.Tensor, row: int, start: int,
                            v: torch.Tensor) -> None:
        """Store a prompt chunk's values v [c, kv, dim] at positions start.. of one layer's row."""
        self._write_positions(v_cache, False, row, start, v)

    def write_tokens(self, k_cache, v_cache, rows: torch.Tensor, positions: torch.Tensor,
                     k: torch.Tensor, v: torch.Tensor) -> tuple:
        """Store one new key and value [D, kv, dim] per row at its position, one layer's cache;
        returns them as stored, dequantized."""
        index = (rows, positions // TILE, positions % TILE)
        return tuple((codes.float() * scales[..., None]).to(self.dtype) for codes, scales in
                     (self._write(k_cache, True, index, k), self._write(v_cache, False, index, v)))

    def _read(self, cache: torch.Tensor, keys: bool, length: int) -> torch.Tensor:
        """Positions [:length] of cache [..., tiles, bytes] in the model's dtype: keys as [...,
        dim, length], values as [..., length, dim]."""
        codes, scales = self._parts(cache[..., :-(-length // TILE), :], keys)
        if keys:  # [..., tiles, dim, 16] -> [..., dim, tiles, 16]
            codes, scales = codes.movedim(-3, -2), scales.unsqueeze(-3)
        else:  # [..., tiles, 16, dim]
            scales = scales.unsqueeze(-1)
        # One pass: codes times scales in float32, rounded once into the model's dtype.
        x = torch.mul(codes, scales, out=torch.empty(codes.shape, dtype=self.dtype,
                                                     device=codes.device))
        if keys:
            return x.flatten(-2)[..., :length]  # [..., dim, length]
        return x.flatten(-3, -2)[..., :length, :]  # [..., length, dim]

    def prompt_keys(self, k_cache: torch.Tensor, row: int, length: int) -> torch.Tensor:
        """One layer's keys of a row, positions [:length], dequantized: [kv, dim, length]."""
        return self._read(k_cache[row], True, length)

    def prompt_values(self, v_cache: torch.Tensor, row: int, length: int) -> torch.Tensor:
        """One layer's values of a row, positions [:length], dequantized: [kv, length, dim]."""
        return self._read(v_cache[row], False, length)

    def copy_positions(self, k_cache: torch.Tensor, v_cache: torch.Tensor, source: int,
                       target: int, length: int) -> None:
        """Copy positions [0, length) of row source to row target in every layer's cache, codes
        and scales, in whole tiles (the target overwrites the rest of the last tile)."""
        tiles = -(-length // TILE)
        k_cache[:, target, :, :tiles] = k_cache[:, source, :, :tiles]
        v_cache[:, target, :, :tiles] = v_cache[:, source, :, :tiles]


class Int8DecodeAttention(Int8Cache, DecodeAttention):
    """Decode attention in torch ops over the int8 cache: a group's rows are gathered
    dequantized, in the model's dtype, into the buffers torch ops read."""

    def _write_tokens(self, k_cache, v_cache, rows, positions, k, v) -> tuple:
        """Write the new keys and values; give them back as the cache holds them now."""
        return self.write_tokens(k_cache, v_cache, rows, positions, k, v)

    def _gather(self, k_cache, v_cache, rows: torch.Tensor, length: int) -> tuple:
        """Rows' keys [g, kv, dim, length] and values [g, kv, length, dim], dequantized."""
        tiles = -(-length // TILE)
        return (self._read(k_cache[:, :, :tiles].index_select(0, rows), True, length).contiguous(),
                self._read(v_cache[:, :, :tiles].index_select(0, rows), False, length).contiguous())
