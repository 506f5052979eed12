"""The engine's linear layers: projections stacked into one matrix product, and on CPUs weights
reordered once into the matmul library's own layout."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .quantized import Int8Linear, check_quantization, quantize_weight

# The batch size the reordered layout is tuned for: a decode step's tokens at the default 32
# rows. Any batch size gives the same results; only the speed depends on it.
PACK_BATCH_HINT = 32


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """True where reordered weights are used: on a CPU, in float32, or in bfloat16 where the CPU
    does bf16 matrix math.

    F.linear on the CPU hands the library plain row-major weights at every call; reordered once,
    the same products take less time. bfloat16 (scripts/benchmark_linear.py, an AVX-512 BF16
    CPU): 9.8 against 14.0 ms for one token, 18.7 against 25.0 ms for 32, with identical
    results. float32 (an AVX2 CPU, 32 tokens): lm_head 16.5 against 34.9 ms, gate and up 0.86
    against 1.41 ms; results differ from F.linear's in the last bits (a different order of
    additions), as any two float32 matmul kernels do.
    """
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16
                                      and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Linear:
    """y = x @ weight.T + bias for one weight [out, in], reordered once when `pack`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack: bool):
        self.out_features = weight.shape[0]
        self.packed = pack
        self.bias = None if bias is None else bias.detach()
        if pack:  # an opaque tensor in the library's layout; the plain weight is not kept
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_BATCH_HINT)
        else:
            self.weight = weight.detach()  # shared with the module, not copied

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., out]."""
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, pack: bool,
                quantization: str = "none") -> Linear | Int8Linear:
    """The layer for one weight [out, in]: int8 when QUANTIZATION=int8 (QuantizationUnavailable
    where it cannot run), else in the weight's dtype, reordered when `pack`."""
    return from_prepared(prepare(weight, bias, quantization), pack, weight.dtype)


def prepare(weight: torch.Tensor, bias: torch.Tensor | None,
            quantization: str = "none") -> dict[str, torch.Tensor]:
    """What a layer is built from, as plain tensors the weight cache can keep: the weight (and
    bias), or with QUANTIZATION=int8 its int8 codes and scales (QuantizationUnavailable where
    int8 cannot run)."""
    check_quantization(quantization, weight.device, weight.dtype)
    parts = {} if bias is None else {"bias": bias.detach()}
    if quantization == "int8":
        parts["q"], parts["scale"] = quantize_weight(weight)
    else:
        parts["weight"] = weight.detach()
    return parts


def from_prepared(parts: dict[str, torch.Tensor], pack: bool,
                  dtype: torch.dtype) -> Linear | Int8Linear:
    """The layer of prepare()'s tensors, for inputs of `dtype`."""
    if "q" in parts:
        return Int8Linear.from_quantized(parts["q"], parts["scale"], parts.get("bias"), dtype,
                                         PACK_BATCH_HINT)
    return Linear(parts["weight"], parts.get("bias"), pack)


def linear_of(module, pack: bool, quantization: str = "none") -> Linear | Int8Linear:
    """The Linear of one nn.Linear."""
    return make_linear(module.weight, module.bias, pack, quantization)


def stacked(*modules, pack: bool, quantization: str = "none") -> Linear | Int8Linear:
    """One Linear for several nn.Linear stacked along their outputs, for one matrix product."""
    return make_linear(*stack(*modules), pack, quantization)


def stack(*modules) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias of several nn.Linear stacked along their outputs (a missing bias
    as zeros where another has one)."""
    weight = torch.cat([m.weight for m in modules]).detach()
    biases = [m.bias for m in modules]
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([b if b is not None else weight.new_zeros(m.weight.shape[0])
                          for b, m in zip(biases, modules)]).detach()
    return weight, bias
