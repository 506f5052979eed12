"""Where QUANTIZATION=int8 runs on this machine: oneDNN's int8 products are right in bfloat16
everywhere, but in float32 only on CPUs with VNNI (model/quantized.py's probe says which)."""
from __future__ import annotations

import torch

from inference_api.model.loading import resolve_dtype
from inference_api.model.quantized import _int8_matmul_works

INT8_DTYPES = [d for d in (torch.bfloat16, torch.float32) if _int8_matmul_works(d) is None]


def int8_dtype_name() -> str:
    """DTYPE for a model served with QUANTIZATION=int8 here: the default where int8 runs in it,
    else bfloat16."""
    default = resolve_dtype("auto", "cpu")
    return "auto" if default in INT8_DTYPES else "bfloat16"
