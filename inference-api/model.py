"""Batched forward pass for Llama-family models over a KV cache preallocated for fixed rows.

One `step` runs a single new token for every decoding row plus prompt chunks of newly admitted
rows (chunked prefill) through the model together, so the weights are read once per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                "qwen2": "Qwen2ForCausalLM"}


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


@dataclass
class PrefillChunk:
    """A slice of one row's prompt; earlier chunks of the prompt are already in the cache."""

    row: int  # cache row of this prompt
    tokens: torch.Tensor  # [c] int64 prompt tokens of this chunk
    start: int  # position of tokens[0] in the sequence


@dataclass
class _Layer:
    """References to one decoder layer's weights (biases may be None)."""

    attn_norm: torch.Tensor
    q: tuple
    k: tuple
    v: tuple
    o: tuple
    mlp_norm: torch.Tensor
    gate: tuple
    up: tuple
    down: tuple
    act: object
    window: int | None  # sliding-window size, None for full attention


def _linear_params(module) -> tuple:
    """(weight, bias) of an nn.Linear, shared with the module rather than copied."""
    return module.weight, module.bias


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32, cast back before the weight multiply, exactly as transformers does."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary embedding (rotate-half convention) to x [T, heads, dim] with cos/sin [T, 1, dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rope_tables(inv_freq: torch.Tensor, scaling: float, max_seq_len: int, dtype) -> tuple:
    """cos/sin [max_seq_len, head_dim] for every position, computed in float32 like transformers."""
    positions = torch.arange(max_seq_len, device=inv_freq.device, dtype=torch.float32)
    freqs = positions[:, None] * inv_freq.float()[None, :]  # [seq, dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [seq, dim]
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def position_mask(q_pos: torch.Tensor, kv_len: int, window: int | None) -> torch.Tensor:
    """Additive float32 mask [*q_pos.shape, kv_len]: 0 where a query may see the key, else -inf."""
    kv_pos = torch.arange(kv_len, device=q_pos.device)
    visible = kv_pos <= q_pos[..., None]  # causal, and hides stale cache beyond the position
    if window is not None:
        visible &= kv_pos > q_pos[..., None] - window
    zero = torch.zeros((), dtype=torch.float32, device=q_pos.device)
    return torch.where(visible, zero, float("-inf"))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of grouped queries q [..., kv_heads, n, dim] over k/v [..., kv_heads, L, dim].

    mask [..., 1, n, L] or broadcastable. Several query heads share one kv head, so q stacks the
    group's heads along n and K/V are never repeated. Softmax in float32.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) + mask  # float32 [..., kv_heads, n, L]
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)  # [..., kv_heads, n, dim]


class DecoderModel:
    """Our own forward pass over the weights of a loaded transformers Llama/Mistral/Qwen2 model."""

    def __init__(self, hf_model, max_rows: int, max_seq_len: int):
        config = hf_model.config
        check_architecture(config)
        inner = hf_model.model
        self.embed = inner.embed_tokens.weight  # [vocab, hidden]
        self.lm_head = hf_model.lm_head.weight  # [vocab, hidden]; same tensor when tied
        self.final_norm = inner.norm.weight
        self.eps = config.rms_norm_eps
        self.vocab_size = self.lm_head.shape[0]
        self.device, self.dtype = self.embed.device, self.embed.dtype
        self.max_rows, self.max_seq_len = max_rows, max_seq_len
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads
        self.scale = inner.layers[0].self_attn.scaling
        layer_types = getattr(config, "layer_types", None) or []
        self.layers = []
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            sliding = (layer_types[i] == "sliding_attention") if layer_types else True
            window = getattr(config, "sliding_window", None) if sliding else None
            self.layers.append(_Layer(
                layer.input_layernorm.weight, _linear_params(attn.q_proj),
                _linear_params(attn.k_proj), _linear_params(attn.v_proj),
                _linear_params(attn.o_proj), layer.post_attention_layernorm.weight,
                _linear_params(mlp.gate_proj), _linear_params(mlp.up_proj),
                _linear_params(mlp.down_proj), mlp.act_fn,
                window if window is not None and window < max_seq_len else None))
        rotary = inner.rotary_emb
        self.cos, self.sin = rope_tables(rotary.inv_freq, rotary.attention_scaling, max_seq_len,
                                         self.dtype)
        shape = (len(self.layers), max_rows, self.kv_heads, max_seq_len, self.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def step(self, decode_rows: torch.Tensor, decode_tokens: torch.Tensor,
             decode_positions: torch.Tensor, prefills: list[PrefillChunk]) -> torch.Tensor:
        """Run one step; float32 logits [D + len(prefills), vocab]: decode rows, then chunk ends."""
        dev = self.device
        d = decode_rows.numel()
        lengths = [c.tokens.numel() for c in prefills]
        self._check_bounds(decode_rows, decode_positions, prefills)
        tokens = torch.cat([decode_tokens.to(dev)] + [c.tokens.to(dev) for c in prefills])  # [T]
        rows = torch.cat([decode_rows.to(dev)] + [torch.full((n,), c.row, device=dev)
                                                  for c, n in zip(prefills, lengths)])  # [T]
        positions = torch.cat([decode_positions.to(dev)] + [
            torch.arange(c.start, c.start + n, device=dev) for c, n in zip(prefills, lengths)])
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [T, 1, dim]
        plan = self._plan(rows[:d], positions[:d], prefills, lengths)
        x = self.embed[tokens]  # [T, hidden]
        for index, layer in enumerate(self.layers):
            x = self._layer(index, layer, x, rows, positions, cos, sin, plan)
        ends = [d - 1 + sum(lengths[:i + 1]) for i in range(len(lengths))]
        last = torch.tensor(list(range(d)) + ends, device=dev)  # [D + chunks]
        h = rms_norm(x[last], self.final_norm, self.eps)
        return F.linear(h, self.lm_head).float()  # lm_head only where logits are returned

    def _check_bounds(self, decode_rows, decode_positions, prefills) -> None:
        """Reject rows/positions outside the cache instead of writing out of bounds."""
        if decode_rows.numel():
            if int(decode_rows.min()) < 0 or int(decode_rows.max()) >= self.max_rows:
                raise IndexError("decode row outside the cache")
            if int(decode_positions.min()) < 0 or int(decode_positions.max()) >= self.max_seq_len:
                raise IndexError("decode position outside the cache")
        for c in prefills:
            if not 0 <= c.row < self.max_rows or c.start < 0 or c.tokens.numel() == 0 \
                    or c.start + c.tokens.numel() > self.max_seq_len:
                raise IndexError(f"prefill chunk (row {c.row}, start {c.start}) outside the cache")

    def _plan(self, rows, positions, prefills, lengths) -> dict:
        """Masks and cache spans of this step, shared by all layers."""
        windows = {layer.window for layer in self.layers}
        plan = {"chunks": []}
        if rows.numel():
            # Decode attends over the contiguous span of rows [lo, hi) so cache slices are views,
            # not copies; rows in the span that are not decoding see position 0 and are dropped.
            lo, hi = int(rows.min()), int(rows.max()) + 1
            kv_len = int(positions.max()) + 1
            span_pos = torch.zeros(hi - lo, dtype=torch.long, device=self.device)
            span_pos[rows - lo] = positions
            plan["decode"] = (lo, hi, kv_len, rows - lo, {
                w: position_mask(span_pos, kv_len, w)[:, None, None, :] for w in windows})
        for c, n in zip(prefills, lengths):
            q_pos = torch.arange(c.start, c.start + n, device=self.device)
            plan["chunks"].append((c.row, n, c.start + n, {  # [groups * c, L], see _layer
                w: position_mask(q_pos, c.start + n, w).repeat(self.groups, 1) for w in windows}))
        return plan

    def _layer(self, index, layer, x, rows, positions, cos, sin, plan) -> torch.Tensor:
        """One decoder layer over all T tokens of the step: x [T, hidden] -> [T, hidden]."""
        t = x.shape[0]
        h = rms_norm(x, layer.attn_norm, self.eps)
        q = rotate(F.linear(h, *layer.q).view(t, self.heads, self.head_dim), cos, sin)
        k = rotate(F.linear(h, *layer.k).view(t, self.kv_heads, self.head_dim), cos, sin)
        v = F.linear(h, *layer.v).view(t, self.kv_heads, self.head_dim)
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]  # [rows, kv, seq, dim]
        # Write every new K/V first so each token attends to itself and earlier chunk tokens.
        k_cache.transpose(1, 2).index_put_((rows, positions), k)
        v_cache.transpose(1, 2).index_put_((rows, positions), v)
        q = q * self.scale  # scaling q is cheaper than scaling the scores
        out = torch.empty_like(q)  # [T, heads, dim]
        if "decode" in plan:
            lo, hi, kv_len, picks, masks = plan["decode"]
            d = picks.numel()
            span_q = q.new_zeros(hi - lo, self.kv_heads, self.groups, self.head_dim)
            span_q[picks] = q[:d].view(d, self.kv_heads, self.groups, self.head_dim)
            o = attend(span_q, k_cache[lo:hi, :, :kv_len], v_cache[lo:hi, :, :kv_len],
                       masks[layer.window])  # [span, kv, groups, dim]
            out[:d] = o[picks].view(d, self.heads, self.head_dim)
        offset = picks.numel() if "decode" in plan else 0
        for row, n, kv_len, masks in plan["chunks"]:
            # [c, heads, dim] -> [kv, groups * c, dim]: the group's queries share the kv head
            qc = q[offset:offset + n].view(n, self.kv_heads, self.groups, self.head_dim)
            qc = qc.permute(1, 2, 0, 3).reshape(self.kv_heads, self.groups * n, self.head_dim)
            o = attend(qc, k_cache[row, :, :kv_len], v_cache[row, :, :kv_len], masks[layer.window])
            o = o.view(self.kv_heads, self.groups, n, self.head_dim).permute(2, 0, 1, 3)
            out[offset:offset + n] = o.reshape(n, self.heads, self.head_dim)
            offset += n
        x = x + F.linear(out.view(t, -1), *layer.o)
        h = rms_norm(x, layer.mlp_norm, self.eps)
        return x + F.linear(layer.act(F.linear(h, *layer.gate)) * F.linear(h, *layer.up),
                            *layer.down)
