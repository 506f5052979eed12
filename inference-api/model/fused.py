"""A decoder layer's operations other than its matrix products and attention, two ways.

NativeLayerOps runs the residual add with the RMSNorm after it, and the rotary embeddings of
queries and keys (with their per-head norms where the family has them), each in one call of our
C++ kernel (fused_ops.cpp, built at first use).
TorchLayerOps runs them in torch ops (GPUs, CPUs without a compiler). Both give the same tensors
to the bit; the activation times the up projection is torch ops in both.
"""
from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import torch

from .layers import rms_norm, rotate
from .native_build import KernelUnavailable, build

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_ops.cpp")
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}
_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_ARGTYPES = {"add_rms_norm": [_P, _P, _P, _P, _I64, _I64, _F, _INT],
             "rotary": [_P, _I64, _P, _P, _P, _INT, _I64, _INT, _INT, _INT, _F, _P, _P, _F, _INT]}


@functools.cache
def _library() -> ctypes.CDLL:
    return build(SOURCE, ("-ffp-contract=off",))  # torch's float32 arithmetic: no contractions


class TorchLayerOps:
    """The operations in torch ops, as transformers computes them."""

    def __init__(self, tables: dict, heads: int, kv_heads: int, head_dim: int, q_scale: float,
                 act, gemma_norms: bool = False):
        self.tables = tables  # rope name -> (cos, sin) [positions, rotated dims]
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_scale, self.act, self.gemma = q_scale, act, gemma_norms

    def rope(self, positions: torch.Tensor) -> dict:
        """What rotary() needs of a step's positions [T], for each rope: their cos and sin
        [T, 1, rotated dims]."""
        return {name: (cos[positions][:, None], sin[positions][:, None])
                for name, (cos, sin) in self.tables.items()}

    def norm(self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + delta, the RMSNorm of that): the residual stream and the next layer's input."""
        if delta is not None:
            x = x + delta
        return x, rms_norm(x, weight, eps, self.gemma)

    def rotary(self, qkv: torch.Tensor, rope, q_norm: torch.Tensor | None = None,
               k_norm: torch.Tensor | None = None, eps: float = 0.0) -> tuple[torch.Tensor, ...]:
        """q [T, heads, dim] rotated and scaled, k [T, kv, dim] rotated, v [T, kv, dim], from the
        stacked projection qkv [T, (heads + 2 kv) * dim]: each query and key head first
        normalized where q_norm and k_norm [dim] are given, rotated by `rope` (one of rope()'s
        values; None: not rotated)."""
        t, dim, heads = qkv.shape[0], self.head_dim, self.heads
        qk = qkv[:, :(heads + self.kv_heads) * dim].view(t, heads + self.kv_heads, dim)
        if q_norm is not None:
            qk = torch.cat((rms_norm(qk[:, :heads], q_norm, eps, self.gemma),
                            rms_norm(qk[:, heads:], k_norm, eps, self.gemma)), dim=1)
        if rope is not None:
            qk = rotate(qk, *rope)  # queries and keys rotated together: fewer small kernels
        v = qkv[:, (heads + self.kv_heads) * dim:].view(t, self.kv_heads, dim)
        return qk[:, :heads] * self.q_scale, qk[:, heads:], v  # scaling q, not the scores

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """act(gate) * up from the stacked projection [T, 2 * ffn]."""
        gate, up = gate_up.chunk(2, -1)
        return self.act(gate).mul_(up)


class NativeLayerOps(TorchLayerOps):
    """The operations in our C++ kernel, each one call over all the step's rows."""

    def __init__(self, tables, heads, kv_heads, head_dim, q_scale, act, gemma_norms=False):
        super().__init__(tables, heads, kv_heads, head_dim, q_scale, act, gemma_norms)
        cos = next(iter(tables.values()))[0]
        if cos.device.type != "cpu" or cos.dtype not in _SUFFIX:
            raise KernelUnavailable(f"the kernel covers CPU float32 and bfloat16, not "
                                    f"{cos.device.type} {cos.dtype}")
        if head_dim % 2:
            raise KernelUnavailable(f"the kernel covers even head sizes, not {head_dim}")
        library = _library()
        self.kernels = {}
        for name, argtypes in _ARGTYPES.items():
            function = getattr(library, f"{name}_{_SUFFIX[cos.dtype]}")
            function.argtypes, function.restype = argtypes, None
            self.kernels[name] = function
        self.tables = {name: (cos.contiguous(), sin.contiguous())
                       for name, (cos, sin) in tables.items()}

    def rope(self, positions: torch.Tensor) -> dict:
        """The positions themselves with each rope's tables: the kernel reads them at each."""
        positions = positions.to(torch.int64).contiguous()
        return {name: (positions, cos, sin) for name, (cos, sin) in self.tables.items()}

    def norm(self, x, delta, weight, eps):
        """x + delta in place (x must be the step's own buffer), and the norm of it."""
        rows, dim = x.shape
        assert x.is_contiguous() and (delta is None or delta.is_contiguous())
        out = torch.empty_like(x)
        self.kernels["add_rms_norm"](x.data_ptr(), None if delta is None else delta.data_ptr(),
                                     weight.data_ptr(), out.data_ptr(), rows, dim, eps,
                                     int(self.gemma))
        return x, out

    def rotary(self, qkv, rope, q_norm=None, k_norm=None, eps=0.0):
        """As TorchLayerOps.rotary, in place: q, k and v are views of qkv."""
        t, dim, heads, kv = qkv.shape[0], self.head_dim, self.heads, self.kv_heads
        assert qkv.is_contiguous()
        positions, cos, sin = rope if rope is not None else (None, None, None)
        assert positions is None or positions.numel() == t
        self.kernels["rotary"](
            qkv.data_ptr(), qkv.shape[1], _pointer(positions), _pointer(cos), _pointer(sin),
            0 if cos is None else cos.shape[-1], t, heads, kv, dim, self.q_scale,
            _pointer(q_norm), _pointer(k_norm), eps, int(self.gemma))
        q = qkv[:, :heads * dim].view(t, heads, dim)
        k = qkv[:, heads * dim:(heads + kv) * dim].view(t, kv, dim)
        return q, k, qkv[:, (heads + kv) * dim:].view(t, kv, dim)


def _pointer(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def layer_ops(tables, heads, kv_heads, head_dim, q_scale, act, gemma_norms=False,
              native: bool | None = None):
    """NativeLayerOps where the kernel builds and covers the model, else TorchLayerOps; native
    True or False asks for one of them (True: or an error saying why not)."""
    args = (tables, heads, kv_heads, head_dim, q_scale, act, gemma_norms)
    if native is not False:
        try:
            return NativeLayerOps(*args)
        except KernelUnavailable as exc:
            if native:
                raise
            device = next(iter(tables.values()))[0].device
            (log.warning if device.type == "cpu" else log.info)(
                "the layers' small operations run as torch ops: %s", exc)
    return TorchLayerOps(*args)
