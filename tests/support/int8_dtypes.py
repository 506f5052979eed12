"""Where QUANTIZATION=int8 runs on this machine: a CPU with VNNI, in bfloat16, and in float32
where oneDNN's int8 sums are right in it (model/quantized.py's checks say which)."""
from __future__ import annotations

import pytest
import torch

from inference_api.model.loading import resolve_dtype
from inference_api.model.quantized import QuantizationUnavailable, check_quantization


def _runs(dtype: torch.dtype) -> bool:
    try:
        check_quantization("int8", "cpu", dtype)
    except QuantizationUnavailable:
        return False
    return True


INT8_DTYPES = [d for d in (torch.bfloat16, torch.float32) if _runs(d)]
# Tests of int8 products run where they can; elsewhere the refusal itself is what is tested
# (test_quantized_linear's probe test runs on every CPU).
needs_int8 = pytest.mark.skipif(not INT8_DTYPES, reason="QUANTIZATION=int8 is refused on this "
                                "CPU (no VNNI), as test_quantized_linear checks")


def int8_dtype_params() -> list:
    """The dtypes to test int8 products in: those it runs in here, or one marked needs_int8."""
    return INT8_DTYPES or [pytest.param(torch.bfloat16, marks=needs_int8)]


def int8_dtype_name() -> str:
    """DTYPE for a model served with QUANTIZATION=int8 here: the default where int8 runs in it,
    else bfloat16."""
    return "auto" if resolve_dtype("auto", "cpu") in INT8_DTYPES else "bfloat16"
