"""Decode attention through our own CPU kernel (kernels/decode_attention.cpp), built at first use.

The kernel is compiled once per machine with the system's C++ compiler (-march=native, so the
library is cached under a key that includes the CPU's features) and loaded through ctypes. Where
it cannot be built (no compiler, not a CPU, a dtype or head size it does not cover), the engine
uses attention.DecodeAttention, the same attention in torch ops. NativeInt8DecodeAttention is
the kernel over the 8-bit cache of int8_cache.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from inference_api.config import cache_dir

from .int8_cache import Int8Cache

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_attention.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c++17", "-shared", "-fPIC")
_SYMBOLS = {torch.bfloat16: "decode_attention_bf16", torch.float32: "decode_attention_f32"}
_INT8_SYMBOLS = {torch.bfloat16: "decode_attention_int8_bf16",
                 torch.float32: "decode_attention_int8_f32"}  # by the queries' dtype
TILE = 16  # positions per key tile; head_dim must be a multiple of it too (the vector width)
MAX_GROUP = 64  # query heads per kv head


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or does not cover this model; the message says why."""


def _cpu_identity() -> str:
    """What -march=native depends on: the machine type and the CPU's feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return platform.machine() + flags


def _compiler() -> str:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise KernelUnavailable(f"no C++ compiler ({compiler!r} not found; set CXX)")
    return compiler


@functools.cache
def build() -> ctypes.CDLL:
    """The compiled kernel library, compiled now unless this machine's build is cached."""
    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join(
        [SOURCE.read_text(), " ".join(FLAGS), version, _cpu_identity()]).encode()).hexdigest()
    target = cache_dir("kernels") / f"decode_attention-{key[:16]}.so"
    try:
        if not target.exists():
            _compile(compiler, target)
        library = ctypes.CDLL(str(target))
    except OSError as exc:  # an unwritable cache folder, a library that does not load
        raise KernelUnavailable(f"cannot build or load {target}: {exc}") from None
    for symbol in [*_SYMBOLS.values(), *_INT8_SYMBOLS.values()]:
        function = getattr(library, symbol)
        function.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 6 + [ctypes.c_void_p]
        function.restype = None
    return library


def _compile(compiler: str, target: Path) -> None:
    """Compile the kernel into `target`, built beside it and renamed into place so that a
    half-written library is never loaded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", partial],
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise KernelUnavailable(f"{compiler} failed to build {SOURCE.name}: {last}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


class NativeDecodeAttention:
    """Decode attention in one kernel call per layer, reading every row's cache in place."""

    symbols = _SYMBOLS  # the kernel's function for each dtype of the model

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
        """Store a prompt chunk's keys k [c, kv, dim] at positions start.. of one layer's row."""
        n = k.shape[0]
        positions = torch.arange(start, start + n, device=k.device)
        by_position = k_cache[row].permute(1, 3, 0, 2, 4)  # [tiles, 16, kv, dim/2, 2], a view
        by_position.index_put_((positions // TILE, positions % TILE),
                               k.reshape(n, self.kv_heads, self.head_dim // 2, 2))

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
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        rows, positions = rows.long().contiguous(), positions.long().contiguous()  # as read
        self.kernel(q.data_ptr(), k.data_ptr(), v.data_ptr(), k_cache.data_ptr(),
                    v_cache.data_ptr(), rows.data_ptr(), positions.data_ptr(), d, kv_heads, group,
                    dim, k_cache.shape[2] * TILE, window or 0, out.data_ptr())


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
