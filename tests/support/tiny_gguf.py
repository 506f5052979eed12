"""A tiny transformers model written as a GGUF file (float32 tensors, llama.cpp's names and
layouts, the one-character tokenizer of tiny_architectures), for the architectures that
transformers' GGUF loader reads: what `MODEL_PATH=<file>.gguf` serves.

The loader takes from a GGUF file only what llama.cpp stores: sizes, rope base, norm epsilon,
sliding window. Everything else comes from the config class's defaults (Gemma 2's soft caps and
query_pre_attn_scalar, for one), so the reference is transformers' model loaded from the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy

from tiny_architectures import CHARS, EOS

# Our families' model_type -> llama.cpp's architecture name, where transformers reads it.
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
                      "gemma2": "gemma2", "gemma3_text": "gemma3"}


def write_gguf(hf_model, path: Path) -> Path:
    """Write hf_model (a Llama, Qwen2, Qwen3, Phi-3, Gemma 2 or Gemma 3 text model) to path."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map)

    config = hf_model.config
    arch = GGUF_ARCHITECTURES[config.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = config.rope_parameters
    rope = rope.get("full_attention", rope)  # Gemma 3: the global layers'
    writer.add_rope_freq_base(rope["rope_theta"])
    if getattr(config, "head_dim", None):
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    if getattr(config, "sliding_window", None):
        writer.add_sliding_window(config.sliding_window)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["\u0120" if c == " " else c for c in CHARS])
    writer.add_token_types([gguf.TokenType.NORMAL] * len(CHARS))
    writer.add_token_scores([0.0] * len(CHARS))
    writer.add_token_merges([])
    writer.add_eos_token_id(EOS)
    writer.add_pad_token_id(EOS)  # else a config default (Phi-3: 32000) past the vocabulary

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config.to_dict())
    names = {hf: gguf_name for gguf_name, hf in
             get_gguf_hf_weights_map(hf_model, processor).items()}
    for hf_name, tensor in hf_model.state_dict().items():
        if hf_name not in names:  # lm_head tied to the embedding: llama.cpp stores it once
            continue
        data = tensor.detach().float().numpy()
        name = names[hf_name]
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            heads = config.num_attention_heads if ".attn_q." in name else \
                config.num_key_value_heads
            data = _permute(data, heads)  # llama.cpp's order, which the loader undoes
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            data = data + 1  # llama.cpp stores Gemma's (1 + weight)
        writer.add_tensor(name, numpy.ascontiguousarray(data, dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _permute(weights: numpy.ndarray, heads: int) -> numpy.ndarray:
    """convert_hf_to_gguf's permute of Llama's q and k rows (interleaved rotary halves)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))
