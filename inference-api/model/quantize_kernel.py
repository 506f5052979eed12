"""The int8 linear layers' work around oneDNN's product (QUANTIZATION=int8), one C++ call each:
the per-row quantization of the input and the per-row scaling (and bias) of the output.

In torch ops the input's quantization takes six small kernels, each with its own dispatch and
thread wake-up (about 35 us a product at 32 rows), and the output's broadcast multiply is slow
(40 us for 32 x 960 in bfloat16, measured): more than int8 weights save. quantize_rows.cpp does
each in one pass; it is compiled for the host at first use (native_build) and called through
ctypes.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from .native_build import KernelUnavailable, build

SOURCE = Path(__file__).with_name("quantize_rows.cpp")
_SUFFIXES = {torch.bfloat16: "bf16", torch.float32: "f32"}
_P, _I64 = ctypes.c_void_p, ctypes.c_int64
_ARGTYPES = {"quantize_rows": [_P, _I64, _I64, _I64, _P, _P], "scale_rows": [_P, _I64, _I64, _P, _P]}


@functools.cache
def _library() -> ctypes.CDLL:
    """The compiled kernel with its functions' argument types set (KernelUnavailable if not)."""
    library = build(SOURCE, ("-ffp-contract=off",))
    for name, argtypes in _ARGTYPES.items():
        for suffix in _SUFFIXES.values():
            function = getattr(library, f"{name}_{suffix}")
            function.argtypes, function.restype = argtypes, None
    return library


def kernels_for(dtype: torch.dtype) -> tuple:
    """The kernel's two functions (quantize, scale) for tensors of `dtype` (bfloat16 or float32);
    builds the kernel at first use."""
    if dtype not in _SUFFIXES:
        raise KernelUnavailable(f"the kernel does not cover {dtype}")
    library = _library()
    return (getattr(library, f"quantize_rows_{_SUFFIXES[dtype]}"),
            getattr(library, f"scale_rows_{_SUFFIXES[dtype]}"))


def quantize_rows(x: torch.Tensor, kernels: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """x [rows, cols] (rows may be apart, columns contiguous) as uint8 q [rows, cols] and float32
    scale [rows], x ~ (q - 128) * scale; `kernels` are kernels_for(x.dtype)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    rows, cols = x.shape
    q = torch.empty((rows, cols), dtype=torch.uint8)
    scale = torch.empty(rows, dtype=torch.float32)
    kernels[0](x.data_ptr(), rows, cols, x.stride(0), q.data_ptr(), scale.data_ptr())
    return q, scale


def scale_rows(y: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
               kernels: tuple) -> torch.Tensor:
    """y [rows, cols] (contiguous) times scale [rows] (float32) row by row, plus bias [cols] (y's
    dtype) when given, in place, in float32 rounded once to y's dtype; returns y."""
    rows, cols = y.shape
    kernels[1](y.data_ptr(), rows, cols, scale.data_ptr(), 0 if bias is None else bias.data_ptr())
    return y
