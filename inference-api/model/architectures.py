"""The transformers causal LMs our forward pass runs, and what sets each family apart.

Every family is a stack of pre-norm decoder layers (RMSNorm, attention with rotary embeddings
over grouped kv heads, RMSNorm, gated MLP); they differ in a few switches, read here from a
loaded transformers model into plain values (the meta of weights.ModelWeights) and tensors:

- Qwen3, Gemma 3: an RMSNorm over each query and key head before the rotary (q_norm, k_norm).
- Gemma 2, Gemma 3: norms scale by (1 + weight), computed in float32 and rounded once; a norm
  after attention and after the MLP as well as before each (post_attn_norm, post_mlp_norm); the
  embeddings scaled by sqrt(hidden); scores scaled by query_pre_attn_scalar ** -0.5; attention
  scores and final logits soft-capped (cap * tanh(x / cap)) where the config says; sliding-window
  layers alternating with global ones, and in Gemma 3 a rope of their own (rope_local_base_freq).
- Phi-3 (and Phi-4-mini): q, k and v in one projection, gate and up in one; rotary over part of
  the head (partial_rotary_factor); longrope scaling.
- SmolLM3: layers without rotary embeddings (no_rope_layers).
- Llama, Mistral, Qwen2: none of these (Qwen2 has q/k/v biases, Mistral a sliding window).
Any family: tied or untied embeddings, and the rope scalings of rope.py.
"""
from __future__ import annotations

from .rope import rope_params

# The supported architectures, by the name in config.json, with their model_type.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text", "Phi3ForCausalLM": "phi3",
    "SmolLM3ForCausalLM": "smollm3",
}
GEMMA_NORMS = ("gemma2", "gemma3_text")  # model types whose norms scale by (1 + weight)


def features(hf_model) -> dict:
    """The family's switches and rope, as plain values for the meta."""
    config, inner = hf_model.config, hf_model.model
    first = inner.layers[0]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    embed_scale = getattr(inner.embed_tokens, "embed_scale", None)
    layer_types = getattr(config, "layer_types", None) or []
    parameters = config.rope_parameters
    if set(parameters) <= {"full_attention", "sliding_attention"}:  # a rope per layer type
        rope = {name: rope_params(config, p, head_dim) for name, p in parameters.items()}
        tables = [layer_types[i] for i in range(len(inner.layers))]
    else:
        rope = {"default": rope_params(config, parameters, head_dim)}
        tables = ["default"] * len(inner.layers)
    uses_rope = getattr(config, "no_rope_layers", None)  # SmolLM3: 1 where a layer rotates
    if uses_rope is not None:
        tables = [table if uses_rope[i] else None for i, table in enumerate(tables)]
    return {
        "gemma_norms": config.model_type in GEMMA_NORMS,
        "qk_norm": hasattr(first.self_attn, "q_norm"),
        "post_norms": hasattr(first, "post_feedforward_layernorm"),
        "embed_scale": None if embed_scale is None else float(embed_scale),
        "attn_softcap": getattr(config, "attn_logit_softcapping", None),
        "final_softcap": getattr(config, "final_logit_softcapping", None),
        "rope": rope, "layer_rope": tables,
        "windows": [_window(config, layer, layer_types[i] if layer_types else None)
                    for i, layer in enumerate(inner.layers)],
        "hidden_act": getattr(config, "hidden_act", None) or getattr(config, "hidden_activation",
                                                                     None),
    }


def layer_modules(layer) -> dict:
    """One decoder layer's linear layers, each as the nn.Linear modules stacked into it (q, k
    and v; gate and up), and its norms' weights (None where the family has no such norm)."""
    attn, mlp = layer.self_attn, layer.mlp
    qkv = (attn.qkv_proj,) if hasattr(attn, "qkv_proj") else (attn.q_proj, attn.k_proj,
                                                               attn.v_proj)
    gate_up = (mlp.gate_up_proj,) if hasattr(mlp, "gate_up_proj") else (mlp.gate_proj,
                                                                        mlp.up_proj)
    linears = {"qkv": qkv, "o": (attn.o_proj,), "gate_up": gate_up, "down": (mlp.down_proj,)}
    post = hasattr(layer, "post_feedforward_layernorm")
    norms = {"attn_norm": layer.input_layernorm,
             # With norms after attention and MLP too (Gemma), the MLP's input norm is the
             # pre-feedforward one; post_attention_layernorm is applied to attention's output.
             "mlp_norm": (layer.pre_feedforward_layernorm if post
                          else layer.post_attention_layernorm),
             "post_attn_norm": layer.post_attention_layernorm if post else None,
             "post_mlp_norm": layer.post_feedforward_layernorm if post else None,
             "q_norm": getattr(attn, "q_norm", None), "k_norm": getattr(attn, "k_norm", None)}
    return linears, {name: module.weight.detach() for name, module in norms.items()
                     if module is not None}


def _window(config, layer, layer_type: str | None) -> int | None:
    """A layer's sliding window: the attention module's own where it has one, else by the layer
    type, else the config's (Mistral, Phi-3: every layer)."""
    attn = layer.self_attn
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    if layer_type is not None and layer_type != "sliding_attention":
        return None
    return getattr(config, "sliding_window", None)
