"""The weights into memory: which architectures we run, on which device and in which dtype."""
from __future__ import annotations

from pathlib import Path

from .architectures import ARCHITECTURES
from .files import ModelLoadError

SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
_MODEL_TYPES = {model_type: name for name, model_type in ARCHITECTURES.items()}


class UnsupportedArchitecture(ValueError):
    """The model is not one of SUPPORTED_ARCHITECTURES."""


def check_architecture(hf_config) -> None:
    """Raise UnsupportedArchitecture unless the config describes a supported model."""
    found = list(getattr(hf_config, "architectures", None) or [])
    if not found:  # configs built in code carry no architectures, only a model_type
        model_type = getattr(hf_config, "model_type", None)
        found = [_MODEL_TYPES.get(model_type, f"model_type={model_type!r}")]
    unsupported = [a for a in found if a not in SUPPORTED_ARCHITECTURES]
    if unsupported:
        raise UnsupportedArchitecture(
            f"unsupported model architecture {', '.join(unsupported)}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")


def resolve_device(device: str) -> str:
    """'auto' means CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("DEVICE=cuda but no CUDA device is available")
    return device


def resolve_dtype(dtype: str, device: str):
    """'auto' means bfloat16 on GPUs and on CPUs with native bf16 matrix math, else float32."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def load_hf_model(folder: Path, device: str, dtype):
    """Load a transformers causal LM from a local folder onto the device, offline (where the
    weight cache has no copy of it: weight_cache.load_model)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load model from {folder}: {type(exc).__name__}: {exc}") from None
    return model.to(device).eval()
