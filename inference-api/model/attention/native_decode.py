"""Decode attention through our own CPU kernel (decode_attention.cpp), built at first use.

The kernel is compiled once per machine for its CPU and loaded through ctypes (native_build).
Where it cannot be built (no compiler, not a CPU, a dtype or head size it does not cover), the
engine uses torch_decode.DecodeAttention, the same attention in torch ops. NativeInt8DecodeAttention is
the kernel over the 8-bit cache of int8_cache.
"""
from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import torch

from .. import native_build
from ..native_build import KernelUnavailable
from .int8_cache import Int8Cache

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_attention.cpp")
_SYMBOLS = {torch.bfloat16: "decode_attention_bf16", torch.float32: "decode_attention_f32"}
_INT8_SYMBOLS = {torch.bfloat16: "decode_attention_int8_bf16",
                 torch.float32: "decode_attention_int8_f32"}  # by the queries' dtype
TILE = 16  # positions per key tile; head_dim must be a multiple of it too (the vector width)
MAX_GROUP = 64  # query heads per kv head


@functools.cache
def build() -> ctypes.CDLL:
    """The compiled kernel library (native_build: compiled now unless this machine's build is
    cached), its functions' signatures declared."""
    library = native_build.build(SOURCE)
    for symbol in [*_SYMBOLS.values(), *_INT8_SYMBOLS.values()]:
        function = getattr(library, symbol)
        function.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 4
                             + [ctypes.c_int64] * 6 + [ctypes.c_float, ctypes.c_void_p])
        function.restype = None
    return library


class NativeDecodeAttention:
    """Decode attention in one kernel call per layer, reading every row's cache in place."""

    symbols = _SYMBOLS  # the kernel's function for each dtype of the model
    softcap: float | None = None  # the scores' soft cap (Gemma 2), set by the model

    def __init__(self, device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int,
                 head_dim: int):
        if device.type != "cpu":
            raise KernelUnavailable(f"the kernel runs on the CPU, not {device.type}")
        if dtype not in self.symbols:
            raise KernelUnavailable(f"the kernel does not cover {dtype}")
        if head_dim % TILE or heads // kv_heads > MAX_GROUP:
            raise KernelUnavailable(f"the kernel does not cover head_dim {head_dim} with "
                                    f"{heads // kv_heads} query heads per kv head")
        self.kernel = getattr(build(), self.symbols[dtype])
        self.dtype, self.kv_heads, self.head_dim = dtype, kv_heads, head_dim

    def reset(self) -> None:
        """Nothing is kept between steps."""

    def allocate_cache(self, layers: int, rows: int, seq: int, device) -> tuple:
        """Zeroed K [layers, rows, kv, tiles, dim/2, 16, 2] and V [layers, rows, kv, tiles * 16,
        dim], seq rounded up to whole tiles of 16 positions (the kernel's key layout)."""
        kv, dim, tiles = self.kv_heads, self.head_dim, -(-seq // TILE)
        return (torch.zeros((layers, rows, kv, tiles, dim // 2, TILE, 2), dtype=self.dtype,
                            device=device),
                torch.zeros((layers, rows, kv, tiles * TILE, dim), dtype=self.dtype,
                            device=device))

    def write_prompt_keys(self, k_cache: torch.Tensor, row: int, start: int,
                          k: torch.Tensor) -> None:
        """Store a prompt chunk's keys k [c, kv, dim] at positions start.. of one layer's row:
        whole tiles in one copy, a part of a tile at either end in one copy each."""
        end = start + k.shape[0]
        pairs = k.view(k.shape[0], self.kv_heads, self.head_dim // 2, 2)  # [c, kv, dim/2, 2]
        position = start
        while position < end:
            tile, slot = divmod(position, TILE)
            whole = (end - position) // TILE if slot == 0 else 0
            if whole:
                part = pairs[position - start:position - start + whole * TILE]
                k_cache[row, :, tile:tile + whole] = part.view(
                    whole, TILE, *pairs.shape[1:]).permute(2, 0, 3, 1, 4)
                position += whole * TILE
            else:
                stop = min(end, (tile + 1) * TILE)
                k_cache[row, :, tile, :, slot:slot + stop - position] = \
                    pairs[position - start:stop - start].permute(1, 2, 0, 3)
                position = stop

    def write_prompt_values(self, v_cache: torch.Tensor, row: int, start: int,
                            v: torch.Tensor) -> None:
        """Store a prompt chunk's values v [c, kv, dim] at positions start.. of one layer's row."""
        v_cache[row, :, start:start + v.shape[0]] = v.transpose(0, 1)

    def copy_positions(self, k_cache: torch.Tensor, v_cache: torch.Tensor, source: int,
                       target: int, length: int) -> None:
        """Copy positions [0, length) of row source to row target in every layer's cache, in
        whole tiles (the target overwrites the rest of the last tile when it prefills)."""
        tiles = -(-length // TILE)
        k_cache[:, target, :, :tiles] = k_cache[:, source, :, :tiles]
        v_cache[:, target, :, :tiles * TILE] = v_cache[:, source, :, :tiles * TILE]

    def prompt_keys(self, k_cache: torch.Tensor, row: int, length: int) -> torch.Tensor:
        """One layer's keys of a row, positions [:length], as [kv, dim, length] (a copy)."""
        tiles = -(-length // TILE)
        keys = k_cache[row, :, :tiles].permute(0, 2, 4, 1, 3)  # [kv, dim/2, 2, tiles, 16]
        return keys.reshape(self.kv_heads, self.head_dim, tiles * TILE)[..., :length]

    def prompt_values(self, v_cache: torch.Tensor, row: int, length: int) -> torch.Tensor:
        """One layer's values of a row, positions [:length], as [kv, length, dim] (a view)."""
        return v_cache[row, :, :length]

    def group_rows(self, rows: torch.Tensor, positions: torch.Tensor, windows: set) -> list:
        """No groups: the rows stay in the caller's order."""
        return []

    def run(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            k_cache: torch.Tensor, v_cache: torch.Tensor, rows: torch.Tensor,
            positions: torch.Tensor, groups: list, window: int | None, out: torch.Tensor) -> None:
        """Write k/v [D, kv, dim] at each row's position of one layer's k_cache [rows, kv,
        tiles, dim/2, 16, 2] and v_cache [rows, kv, seq, dim] (or both int8 tiles [rows, kv,
        tiles, bytes]), then attend q [D, kv, groups, dim] into out (like q)."""
        d, kv_heads, group, dim = q.shape
        assert out.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous()
        # The step's q, k and v are views of its stacked projection, each row contiguous: the
        # kernel reads them in place, told how far apart their rows are.
        q, k, v = (x if _rows_contiguous(x) else x.contiguous() for x in (q, k, v))
        rows, positions = rows.long().contiguous(), positions.long().contiguous()  # as read
        self.kernel(q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), k.stride(0),
                    v.stride(0), k_cache.data_ptr(), v_cache.data_ptr(), rows.data_ptr(),
                    positions.data_ptr(), d, kv_heads, group, dim, k_cache.shape[2] * TILE,
                    window or 0, self.softcap or 0.0, out.data_ptr())

    def attend_prompt(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      row: int, start: int, window: int | None, out: torch.Tensor) -> None:
        """Attention of a prompt chunk's queries q [c, kv, groups, dim], at positions start..
        of one layer's cache row that holds their keys and values already, into out (like q):
        each position by itself, as a decode step computes it (the batch-invariant mode's)."""
        n, kv_heads, group, dim = q.shape
        q = q if _rows_contiguous(q) else q.contiguous()
        rows = torch.full((n,), row, dtype=torch.long)
        positions = torch.arange(start, start + n, dtype=torch.long)
        self.kernel(q.data_ptr(), None, None, q.stride(0), 0, 0, k_cache.data_ptr(),
                    v_cache.data_ptr(), rows.data_ptr(), positions.data_ptr(), n, kv_heads,
                    group, dim, k_cache.shape[2] * TILE, window or 0, self.softcap or 0.0,
                    out.data_ptr())


def _rows_contiguous(x: torch.Tensor) -> bool:
    """True when each x[i] is contiguous, whatever the distance between them."""
    expected = 1
    for size, stride in zip(reversed(x.shape[1:]), reversed(x.stride()[1:])):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


class NativeInt8DecodeAttention(Int8Cache, NativeDecodeAttention):
    """The kernel over the 8-bit cache: it quantizes each new key and value as it writes them and
    dequantizes the cache in registers as it reads it, in float32 arithmetic."""

    symbols = _INT8_SYMBOLS


def choose_decode_attention(choice: str, device: torch.device, dtype: torch.dtype, heads: int,
                            kv_heads: int, head_dim: int, torch_attention,
                            kv_cache_dtype: str = "auto"):
    """The decode attention DECODE_ATTENTION asks for: "native" (the kernel, or an error),
    "torch" (`torch_attention()`, which keeps the cache KV_CACHE_DTYPE asks for), or "auto"
    (the kernel where it can run, else torch ops); the kernel's int8 variant for an int8 cache."""
    if choice != "torch":
        kernel = NativeInt8DecodeAttention if kv_cache_dtype == "int8" else NativeDecodeAttention
        try:
            return kernel(device, dtype, heads, kv_heads, head_dim)
        except KernelUnavailable as exc:
            if choice == "native":
                raise
            (log.warning if device.type == "cpu" else log.info)(
                "decode attention runs as torch ops: %s", exc)
    return torch_attention()
