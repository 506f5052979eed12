"""PEFT LoRA adapters read from their folders (adapter_config.json, adapter_model.safetensors)
with safetensors alone, and checked against the base model before it loads: an adapter that
cannot be applied exactly is refused at start, with the reason.

What is served: LoRA (not DoRA) on the attention and MLP projections q_proj, k_proj, v_proj,
o_proj, gate_proj, up_proj and down_proj of any layers, one rank for all of them, scaled by
lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). Refused: other targets (embeddings,
lm_head), modules_to_save, trained biases, per-module rank or alpha patterns, shapes that are not
the base model's, and a base_model_name_or_path that none of the served model's names matches.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

# PEFT's module name -> (our stacked linear layer, its part: 0 first, 1 second, 2 third).
TARGETS = {"q_proj": ("qkv", 0), "k_proj": ("qkv", 1), "v_proj": ("qkv", 2), "o_proj": ("o", 0),
           "gate_proj": ("gate_up", 0), "up_proj": ("gate_up", 1), "down_proj": ("down", 0)}
# A saved LoRA weight: base_model.model.model.layers.<i>.<self_attn|mlp>.<module>.lora_<A|B>.weight
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


class AdapterRefused(ValueError):
    """An adapter cannot be served on this model; the message says which and why."""


@dataclass
class BaseShapes:
    """The sizes of the base model's linear layers that an adapter must match."""

    layers: int
    hidden: int
    q: int  # query projection's outputs: heads * head_dim
    kv: int  # key (and value) projection's outputs: kv_heads * head_dim
    ffn: int  # intermediate size

    @classmethod
    def of_config(cls, config) -> "BaseShapes":
        """From the model folder's config.json (as attributes)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, config.hidden_size, heads * head_dim,
                   kv_heads * head_dim, config.intermediate_size)

    def parts(self, linear: str) -> list[int]:
        """The output sizes of a stacked linear layer's parts, in order."""
        return {"qkv": [self.q, self.kv, self.kv], "o": [self.hidden],
                "gate_up": [self.ffn, self.ffn], "down": [self.hidden]}[linear]

    def in_features(self, linear: str) -> int:
        return {"qkv": self.hidden, "o": self.q, "gate_up": self.hidden, "down": self.ffn}[linear]


@dataclass
class LoraAdapter:
    """One adapter: per (layer, PEFT module name), A [r, in] and B [out, r], and the scaling."""

    name: str
    rank: int
    scaling: float
    weights: dict[tuple[int, str], tuple] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        """The PEFT modules it changes, in TARGETS' order."""
        found = {module for _, module in self.weights}
        return [module for module in TARGETS if module in found]


def read_adapter(name: str, path: str, base: BaseShapes, base_names: list[str]) -> LoraAdapter:
    """The adapter in folder `path`, checked against the base model's shapes and names
    (AdapterRefused saying why where it cannot be served)."""
    folder = Path(path)

    def refuse(reason: str):
        return AdapterRefused(f"LoRA adapter {name!r} ({path}) cannot be served: {reason}")

    config = _read_config(folder, refuse)
    _check_config(config, base_names, refuse)
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)):
        raise refuse(f"r must be a positive integer and lora_alpha a number, not {rank!r} and "
                     f"{alpha!r}")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    adapter = LoraAdapter(name, rank, scaling)
    tensors = _read_weights(folder, refuse)
    for key, tensor in tensors.items():
        match = _KEY.search(key)
        if match is None or match[2] not in TARGETS:
            raise refuse(f"weight {key} is not a LoRA weight of a module we apply (served: "
                         f"{', '.join(TARGETS)})")
        layer, module, which = int(match[1]), match[2], match[3]
        if layer >= base.layers:
            raise refuse(f"weight {key} is for layer {layer}; the model has {base.layers}")
        pair = adapter.weights.setdefault((layer, module), [None, None])
        pair["AB".index(which)] = tensor
    if not adapter.weights:
        raise refuse("adapter_model.safetensors holds no LoRA weights")
    for (layer, module), (a, b) in adapter.weights.items():
        linear, part = TARGETS[module]
        shape_in, shape_out = base.in_features(linear), base.parts(linear)[part]
        if a is None or b is None:
            raise refuse(f"layer {layer} {module} has lora_{'A' if a is None else 'B'} missing")
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise refuse(f"layer {layer} {module}: lora_A {tuple(a.shape)} and lora_B "
                         f"{tuple(b.shape)} are not of rank r={rank}")
        if a.shape[1] != shape_in or b.shape[0] != shape_out:
            raise refuse(f"layer {layer} {module}: lora_A {tuple(a.shape)} and lora_B "
                         f"{tuple(b.shape)} do not fit the model's {module} ({shape_out} x "
                         f"{shape_in}): an adapter of another model")
    adapter.weights = {k: (a, b) for k, (a, b) in adapter.weights.items()}
    return adapter


def _read_config(folder: Path, refuse) -> dict:
    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise refuse(f"cannot read {path.name}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise refuse(f"{path.name} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise refuse(f"{path.name} is not a JSON object")
    return config


def _check_config(config: dict, base_names: list[str], refuse) -> None:
    """Refuse what a LoRA product added to the base layers' outputs would not reproduce."""
    if config.get("peft_type", "LORA") != "LORA":
        raise refuse(f"peft_type {config.get('peft_type')!r}; only LORA adapters are served")
    unsupported = [
        (config.get("use_dora"), "DoRA (use_dora)"),
        (config.get("modules_to_save"), f"modules_to_save {config.get('modules_to_save')}"),
        (config.get("bias", "none") != "none", f"trained biases (bias={config.get('bias')!r})"),
        (config.get("lora_bias"), "a bias on lora_B (lora_bias)"),
        (config.get("rank_pattern"), "per-module ranks (rank_pattern)"),
        (config.get("alpha_pattern"), "per-module alphas (alpha_pattern)"),
        (config.get("fan_in_fan_out"), "fan_in_fan_out weights"),
        (config.get("layer_replication"), "layer_replication")]
    for present, what in unsupported:
        if present:
            raise refuse(f"{what} is not supported")
    targets = config.get("target_modules")
    if isinstance(targets, list):
        other = [str(t) for t in targets if str(t).rsplit(".", 1)[-1] not in TARGETS]
        if other:
            raise refuse(f"target modules {', '.join(other)} cannot be applied (served: "
                         f"{', '.join(TARGETS)})")
    base = config.get("base_model_name_or_path")
    if base and not _same_model(base, base_names):
        raise refuse(f"it was trained on {base!r}, and this server serves "
                     f"{' / '.join(dict.fromkeys(base_names))} (set MODEL_ID to the base "
                     "model's name if it is the same model)")


def _same_model(base: str, base_names: list[str]) -> bool:
    """True when the last part of the adapter's base path names the served model by one of its
    names (MODEL_ID, the folder or GGUF file of MODEL_PATH, the config's _name_or_path), case
    aside."""
    def short(name: str) -> str:
        return name.rstrip("/").rsplit("/", 1)[-1].lower().removesuffix(".gguf")
    return short(base) in {short(n) for n in base_names if n}


def _read_weights(folder: Path, refuse) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        other = " (adapter_model.bin is not read: save with safe_serialization)" \
            if (folder / "adapter_model.bin").exists() else ""
        raise refuse(f"no {path.name}{other}")
    try:
        return load_file(path)
    except (OSError, SafetensorError) as exc:
        raise refuse(f"cannot read {path.name}: {exc}") from None


def read_adapters(config, model_config) -> list[LoraAdapter]:
    """Every adapter LORA_MODULES names, checked against the model whose config.json is
    model_config, before the model loads."""
    source = Path(config.model_path).name if config.model_path else ""
    if source.lower().endswith(".gguf"):  # Name.Q4_K_M.gguf: the name before the quantization
        source = source.split(".", 1)[0]
    names = [n for n in (config.model_id, source, getattr(model_config, "_name_or_path", ""))
             if n]
    base = BaseShapes.of_config(model_config)
    return [read_adapter(name, path, base, names) for name, path in config.lora_adapters.items()]
