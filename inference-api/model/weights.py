"""The model's weights as our forward pass takes them, apart from transformers: converted to the
model's dtype, projections stacked, int8-quantized under QUANTIZATION=int8, and the few numbers
of the architecture that the forward pass needs.

ModelWeights is what the weight cache (weight_cache) keeps on disk, so a restarted backend maps
it instead of loading the model through transformers again; weights_of makes it from a loaded
transformers model, the one place that reads transformers' modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from .architectures import features, layer_modules
from .linear import Linear, from_prepared, prepare, stack
from .loading import check_architecture
from .quantized import Int8Linear

# transformers' activations by config name, as the functions they call: what a cached model's
# MLP runs (a model whose activation is not here is loaded through transformers every time).
ACTIVATIONS: dict[str, Callable] = {"silu": F.silu, "swish": F.silu,
                                    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}
LINEARS = ("qkv", "o", "gate_up", "down")


@dataclass
class ModelWeights:
    """Flat named tensors and the architecture's numbers (`meta`, plain values).

    Tensors: embed [vocab, hidden], final_norm, and per layer i layers.i.attn_norm and
    layers.i.mlp_norm (and where the family has them, architectures: q_norm and k_norm [head_dim],
    post_attn_norm and post_mlp_norm); each linear layer (lm_head, layers.i.qkv, .o,
    .gate_up, .down) as linear.prepare() made it, under its name: `<name>.weight` (or `.q` and
    `.scale` in int8) and `<name>.bias` where it has one.
    """

    meta: dict
    tensors: dict[str, torch.Tensor]
    act: Callable  # the MLP's activation
    from_cache: bool = False  # loaded from the weight cache, not converted at this start

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors["embed"].dtype

    def linear(self, name: str, pack: bool) -> Linear | Int8Linear:
        """The layer `name` (e.g. "layers.3.qkv"), its weight reordered when `pack`."""
        prefix = name + "."
        parts = {k[len(prefix):]: t for k, t in self.tensors.items() if k.startswith(prefix)}
        return from_prepared(parts, pack, self.dtype)

    def other_norms(self, layer: int) -> dict[str, torch.Tensor]:
        """A layer's norms beyond its two pre-norms, by name, where the family has them."""
        names = ("q_norm", "k_norm", "post_attn_norm", "post_mlp_norm")
        return {n: self.tensors[f"layers.{layer}.{n}"] for n in names
                if f"layers.{layer}.{n}" in self.tensors}

    def names(self) -> list[str]:
        """Every tensor name the meta calls for, as weights_of makes them (to check a file)."""
        linear = ["q", "scale"] if self.meta["quantization"] == "int8" else ["weight"]
        names = ["embed", "final_norm"] + [f"lm_head.{p}" for p in linear]
        norms = ["attn_norm", "mlp_norm"] + (["q_norm", "k_norm"] if self.meta["qk_norm"] else [])
        norms += ["post_attn_norm", "post_mlp_norm"] if self.meta["post_norms"] else []
        for i in range(self.meta["layers"]):
            names += [f"layers.{i}.{norm}" for norm in norms]
            names += [f"layers.{i}.{n}.{p}" for n in LINEARS for p in linear]
        return names

    def to(self, device) -> "ModelWeights":
        """The same weights on another device (a no-op where they are)."""
        tensors = {k: t.to(device) for k, t in self.tensors.items()}
        return ModelWeights(self.meta, tensors, self.act, self.from_cache)


def weights_of(hf_model, quantization: str = "none") -> ModelWeights:
    """The weights of a loaded transformers model of a supported architecture (architectures),
    prepared for our forward pass (UnsupportedArchitecture for any other; QuantizationUnavailable
    where int8 cannot run)."""
    config = hf_model.config
    check_architecture(config)
    inner = hf_model.model
    heads = config.num_attention_heads
    tensors = {"embed": inner.embed_tokens.weight.detach(),
               "final_norm": inner.norm.weight.detach()}
    _add(tensors, "lm_head", prepare(hf_model.lm_head.weight, hf_model.lm_head.bias,
                                     quantization))  # embed's weight where tied
    for i, layer in enumerate(inner.layers):
        linears, norms = layer_modules(layer)
        tensors.update({f"layers.{i}.{name}": weight for name, weight in norms.items()})
        for name, modules in linears.items():
            weight, bias = stack(*modules) if len(modules) > 1 else (modules[0].weight,
                                                                     modules[0].bias)
            _add(tensors, f"layers.{i}.{name}", prepare(weight, bias, quantization))
    meta = {"layers": len(inner.layers), "heads": heads,
            "kv_heads": config.num_key_value_heads,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
            "eps": config.rms_norm_eps, "scale": inner.layers[0].self_attn.scaling,
            "quantization": quantization, **features(hf_model)}
    mlp = inner.layers[0].mlp
    return ModelWeights(meta, tensors, getattr(mlp, "act_fn", None) or mlp.activation_fn)


def _add(tensors: dict, name: str, parts: dict) -> None:
    tensors.update({f"{name}.{part}": t for part, t in parts.items()})
