"""Int8 linear layers (QUANTIZATION=int8): int8 weights per output channel, activations
quantized per row as each product runs, the product in oneDNN's int8 matmul.

Weights: symmetric per output channel, w ~ w_q * s_col with s_col = amax(|w[col]|) / 127.
Activations: symmetric per row (per token), x ~ (x_u8 - 128) * s_row with s_row =
amax(|x[row]|) / 127, so one token's outliers cost no other token precision. oneDNN's int8
linear takes a single activation scale, so it runs with scale 1 and zero point 128, and each
output row is scaled by s_row afterwards, then the bias added:

    y[row, col] = sum_k (x_u8[row, k] - 128) * w_q[col, k] * s_col[col] * s_row[row] + bias[col]

The int32 sums are exact; the op scales them by s_col into the model's dtype (rounding once)
and the row scale rounds once more. The activations are quantized by one C++ call
(quantize_kernel), where torch ops would cost more than int8 weights save. Decode steps read
every weight once, so int8 weights halve what a step streams from memory against bfloat16.
"""
from __future__ import annotations

import functools

import torch

from inference_api.config import QUANTIZATIONS

from .native_build import KernelUnavailable
from .quantize_kernel import kernels_for, quantize_rows, scale_rows

_ZERO_POINT = 128  # activations as uint8: the u8 x s8 products the CPU's int8 units do natively
_OUTPUT_DTYPES = (torch.bfloat16, torch.float32)
_ROUNDING = {torch.bfloat16: 2 ** -8, torch.float32: 0}  # of an exact integer into the dtype


class QuantizationUnavailable(RuntimeError):
    """QUANTIZATION asks for what this torch build or device cannot run; the message says why."""


@functools.cache
def _int8_matmul_works(dtype: torch.dtype) -> str | None:
    """None when oneDNN's int8 linear runs here and gives the right product in `dtype`, else why
    not. The second probe multiplies the largest codes (255 x 127): CPUs without VNNI's int8 dot
    product add two such products in 16 bits, where some of oneDNN's kernels saturate (an
    AVX2-only CPU gave 255 for 64,516 in float32, while its bfloat16 kernel was right)."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    probes = [(torch.tensor([[1, -2, 3], [-127, 127, 0]], dtype=torch.int8),
               torch.tensor([[130, 128, 0], [255, 1, 128]], dtype=torch.uint8)),
              (torch.full((2, 4), 127, dtype=torch.int8),
               torch.full((2, 4), 255, dtype=torch.uint8))]
    for w, x in probes:
        try:
            packed = torch.ops.onednn.qlinear_prepack(w, list(x.shape))
            y = torch.ops.onednn.qlinear_pointwise(
                x, 1.0, _ZERO_POINT, packed, torch.ones(w.shape[0]),
                torch.zeros(w.shape[0], dtype=torch.long), None, 1.0, 0, dtype, "none", [], "")
        except (AttributeError, RuntimeError, NotImplementedError) as exc:
            return f"oneDNN's int8 linear does not run in this torch build ({type(exc).__name__})"
        want = ((x.long() - _ZERO_POINT) @ w.long().T).double()
        if not torch.allclose(y.double(), want, rtol=_ROUNDING[dtype], atol=0):
            return (f"oneDNN's int8 linear gives wrong {str(dtype).removeprefix('torch.')} "
                    "results on this CPU (sums of byte products saturate without VNNI)")
    return None


def _vnni_missing() -> str | None:
    """None where the CPU has VNNI's int8 dot products, which oneDNN's fast int8 kernels use, else
    why int8 cannot run: without them (an AVX2-only CPU) its bfloat16 int8 product went through a
    reference path, 1.3 s for 32 rows by 576 x 1536 against 3.5 ms for the bfloat16 product."""
    supported = getattr(torch.cpu, "_is_vnni_supported", None)
    if supported is None or supported():
        return None
    return ("this CPU has no VNNI int8 dot products, without which oneDNN's int8 matmul runs "
            "hundreds of times slower than the float product")


def _kernel_builds(dtype: torch.dtype) -> str | None:
    """None when the activations' quantization kernel builds and loads, else why not."""
    try:
        kernels_for(dtype)
    except KernelUnavailable as exc:
        return f"its quantization kernel: {exc}"
    return None


def check_quantization(quantization: str, device: torch.device | str, dtype: torch.dtype) -> None:
    """Raise QuantizationUnavailable unless `quantization` can run on this device and dtype."""
    if quantization == "none":
        return
    if quantization not in QUANTIZATIONS:
        raise QuantizationUnavailable(f"QUANTIZATION={quantization!r} is not valid: expected "
                                      + "|".join(QUANTIZATIONS))
    device = torch.device(device)
    why = None
    if device.type != "cpu":
        why = f"it runs on CPUs only (oneDNN's int8 linear), not on {device.type}"
    elif dtype not in _OUTPUT_DTYPES:
        why = f"it needs DTYPE bfloat16 or float32, not {str(dtype).removeprefix('torch.')}"
    else:
        why = _int8_matmul_works(dtype) or _vnni_missing() or _kernel_builds(dtype)
    if why:
        raise QuantizationUnavailable(f"QUANTIZATION=int8 is not available: {why}; "
                                      "set QUANTIZATION=none")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weight [out, in] and float32 scale [out]: symmetric, one scale per output channel
    (amax / 127; an all-zero channel gets scale 1 and zeros)."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_rows_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What quantize_rows.cpp computes, in torch ops (for tests): x [rows, in] as uint8 q and
    float32 scale [rows], x ~ (q - 128) * scale, symmetric per row, bit for bit the kernel's.

    inv = 127 / amax(|x[row]|) and q = round_half_even(x * inv) + 128, in float32; an all-zero
    row has scale 0 and q 128.
    """
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    inv = torch.where(amax > 0, torch.div(torch.tensor([127.0]), amax), torch.zeros_like(amax))
    return (torch.round(xf * inv) + _ZERO_POINT).to(torch.uint8), (amax / 127).view(-1)


class Int8Linear:
    """y = x @ weight.T + bias with the weight in int8 per output channel and x quantized per
    row at each call; the plain weight is not kept. Output in x's dtype."""

    packed = True  # weights are in oneDNN's own layout, as Linear's reordered ones
    quantization = "int8"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch_hint: int = 32):
        self._build(*quantize_weight(weight), bias, weight.dtype, batch_hint)

    @classmethod
    def from_quantized(cls, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                       dtype: torch.dtype, batch_hint: int = 32) -> "Int8Linear":
        """The layer of a weight quantize_weight has already quantized into (q, scale), for
        inputs of `dtype` (the weight cache keeps them so; quantizing again takes time)."""
        layer = cls.__new__(cls)
        layer._build(q, scale, bias, dtype, batch_hint)
        return layer

    def _build(self, q, scale, bias, dtype, batch_hint) -> None:
        self.out_features, self.in_features = q.shape
        self.dtype = dtype
        self.kernels = kernels_for(dtype)
        self.w_scale = scale
        self.weight = torch.ops.onednn.qlinear_prepack(q, [batch_hint, self.in_features])
        self.w_zero = torch.zeros(self.out_features, dtype=torch.long)
        self.product = torch.ops.onednn.qlinear_pointwise.default  # resolved once, not per call
        self.bias = None if bias is None else bias.detach().to(self.dtype).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., out]."""
        if x.dtype != self.dtype:
            raise TypeError(f"int8 linear built for {self.dtype} inputs got {x.dtype}")
        flat = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        q, scale = quantize_rows(flat, self.kernels)
        # The exact int32 sums times the weights' scales, in x's dtype; then each row's scale.
        y = self.product(q, 1.0, _ZERO_POINT, self.weight, self.w_scale, self.w_zero, None, 1.0,
                         0, x.dtype, "none", [], "")
        scale_rows(y, scale, self.bias, self.kernels)
        return y if x.dim() == 2 else y.view(*x.shape[:-1], self.out_features)
