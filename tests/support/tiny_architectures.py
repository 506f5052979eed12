"""Tiny random-weight models of every supported architecture, built from configs with the real
models' shape features switched on (sliding windows, soft-capping, rope scalings, GQA, q/k
norms, partial rotary, layers without rope), and saved as model folders the server can load.

The tokenizer is one token per printable ASCII character, so a text is its tokens: comparing
texts compares token ids. Norm weights and biases are randomized (transformers starts them at
0 or 1, where Gemma's (1 + weight) or a q/k norm would change nothing).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CHARS = [chr(c) for c in range(32, 127)]
VOCAB = len(CHARS)  # 95
EOS = VOCAB - 1  # "~", the end-of-sequence token of generation_config.json
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=256, initializer_range=0.1, pad_token_id=None,
              bos_token_id=None, eos_token_id=None)
TOKENS = 64  # greedy tokens the tests compare
LONGROPE_ORIGINAL = 48  # Phi-3's short factors up to here, its long ones past it

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
YARN = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
        "original_max_position_embeddings": 32}


def _configs() -> dict:
    from transformers import (Gemma2Config, Gemma3TextConfig, LlamaConfig, MistralConfig,
                              Phi3Config, Qwen2Config, Qwen3Config, SmolLM3Config)

    half = COMMON["head_dim"] // 2  # Phi-3's longrope factors: one per rotated pair of dims
    return {
        "llama": LlamaConfig(**COMMON, rope_parameters=LLAMA3, tie_word_embeddings=False),
        "mistral": MistralConfig(**COMMON, sliding_window=6,
                                 rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                  "rope_theta": 10000.0}),
        "qwen2": Qwen2Config(**COMMON, tie_word_embeddings=True),
        # Qwen3 with YaRN (as its long-context configs), and a sliding window on its upper
        # layers (use_sliding_window with max_window_layers).
        "qwen3": Qwen3Config(**dict(COMMON, max_position_embeddings=128), rope_parameters=YARN,
                             use_sliding_window=True, sliding_window=7, max_window_layers=2,
                             tie_word_embeddings=True),
        "gemma2": Gemma2Config(**dict(COMMON, head_dim=32), sliding_window=8,
                               query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
                               final_logit_softcapping=3.0),
        # Gemma 3: sliding and global layers alternating (every 2nd layer global here, every 6th
        # in the real models), the global ones with linear scaling, the local ones a base of
        # their own.
        "gemma3": Gemma3TextConfig(**COMMON, sliding_window=8, sliding_window_pattern=2,
                                   query_pre_attn_scalar=24,
                                   rope_parameters={
                                       "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                          "rope_theta": 1000000.0},
                                       "sliding_attention": {"rope_type": "default",
                                                             "rope_theta": 10000.0}}),
        # Phi-4-mini's shape: partial rotary (3/4 of each head), longrope, tied embeddings.
        "phi3": Phi3Config(**{k: v for k, v in COMMON.items() if k != "head_dim"},
                           partial_rotary_factor=0.75, tie_word_embeddings=True, sliding_window=12,
                           rope_parameters={
                               "rope_type": "longrope", "rope_theta": 10000.0,
                               "partial_rotary_factor": 0.75,
                               "short_factor": [1.0 + 0.1 * i for i in range(half * 3 // 4)],
                               "long_factor": [1.5 + 2.0 * i for i in range(half * 3 // 4)],
                               "original_max_position_embeddings": LONGROPE_ORIGINAL}),
        # SmolLM3: every 2nd layer without rope (every 4th in the real model).
        "smollm3": SmolLM3Config(**COMMON, no_rope_layer_interval=2),
    }


ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "smollm3")


def build(name: str, seed: int = 0, **overrides):
    """A tiny random transformers model of the named family, in float32, eval mode; overrides
    change config attributes."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _configs()[name]
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:  # norms and biases
                param.add_(torch.randn_like(param) * 0.3)
    return model


def tokenizer():
    """One token per printable ASCII character: byte-level, as the structured outputs'
    tokenizer needs, with no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = ["\u0120" if c == " " else c for c in CHARS]  # byte-level's name for the space
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def save(name: str, folder: Path, seed: int = 0):
    """Save the tiny model of the named family and its tokenizer into folder; the model."""
    model = build(name, seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    # The server needs an end-of-sequence token; the model returned generates without one.
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": EOS}))
    return model


def encode(text: str) -> list[int]:
    return [CHARS.index(c) for c in text]


def decode(ids) -> str:
    return "".join(CHARS[int(i)] for i in ids)


def transformers_answers(hf_model, prompt_ids: list[int]):
    """transformers' greedy tokens, each one's log probability, and the prompt's log
    probabilities (of each token after the first), all in float32."""
    with torch.inference_mode():
        # ignore_eos bans the end-of-sequence token, as min_new_tokens does here; the scores
        # are the logits after that ban.
        ids = torch.tensor([prompt_ids])  # no padding: the mask is given, not guessed from ids
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=TOKENS,
                                min_new_tokens=TOKENS, eos_token_id=EOS, pad_token_id=EOS,
                                do_sample=False, output_scores=True, return_dict_in_generate=True)
        tokens = out.sequences[0, len(prompt_ids):].tolist()
        logprobs = [torch.log_softmax(step[0].float(), -1)[t].item()
                    for step, t in zip(out.scores, tokens)]
        prompt = torch.log_softmax(hf_model(torch.tensor([prompt_ids])).logits[0].float(), -1)
        prompt_logprobs = [prompt[i, t].item() for i, t in enumerate(prompt_ids[1:])]
    return tokens, logprobs, prompt_logprobs
