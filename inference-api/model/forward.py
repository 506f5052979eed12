"""Batched forward pass for Llama-family models over a KV cache preallocated for fixed rows.

One `step` runs a single new token for every decoding row plus prompt chunks of newly admitted
rows (chunked prefill) through the model together, so the weights are read once per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention.int8_cache import Int8DecodeAttention
from .attention.native_decode import choose_decode_attention
from .attention.ops import attend_row, position_mask
from .attention.torch_decode import KV_BUCKET, DecodeAttention, kv_extent
from .fused import layer_ops
from .layers import rope_tables
from .linear import Linear, can_pack
from .lora import token_rows
from .weights import ModelWeights, weights_of


@dataclass
class PrefillInput:
    """A slice of one row's prompt; earlier chunks of the prompt are already in the cache."""

    row: int  # cache row of this prompt
    tokens: torch.Tensor  # [c] int64 prompt tokens of this chunk
    start: int  # position of tokens[0] in the sequence
    all_logits: bool = False  # logits at every position (prompt logprobs), not just the last


@dataclass
class _Layer:
    """One decoder layer's weights (biases may be None)."""

    attn_norm: torch.Tensor
    qkv: Linear  # q, k and v projections stacked: one matrix product instead of three
    o: Linear
    mlp_norm: torch.Tensor
    gate_up: Linear  # gate and up projections stacked
    down: Linear
    act: object
    window: int | None  # sliding-window size, None for full attention


@dataclass
class _DecodeLayout:
    """The decoding rows of a step, split into groups of similar length once per step."""

    rows: torch.Tensor  # [D], in group order
    positions: torch.Tensor  # [D], in group order
    groups: list = field(default_factory=list)  # of attention.DecodeGroup


@dataclass
class _PrefillLayout:
    """One prefill chunk of a step: its row, sequence start and offset among the step's tokens."""

    row: int
    start: int
    offset: int
    n: int
    kv_len: int = 0  # cache positions read: start + n rounded up to KV_BUCKET
    masks: dict | None = None  # sliding window -> additive mask [groups * n, kv_len]


class DecoderModel:
    """Our own forward pass over a Llama/Mistral/Qwen2 model's weights: a ModelWeights (from the
    weight cache) or a loaded transformers model."""

    def __init__(self, model, max_rows: int, max_seq_len: int, kv_bucket: int = KV_BUCKET,
                 pack_weights: bool | None = None, attention: str = "auto",
                 fused: bool | None = None, quantization: str = "none",
                 kv_cache_dtype: str = "auto"):
        weights = model if isinstance(model, ModelWeights) else weights_of(model, quantization)
        meta = weights.meta
        if meta["quantization"] != quantization:
            raise ValueError(f"weights prepared for QUANTIZATION={meta['quantization']}, "
                             f"not {quantization}")
        self.embed = weights.tensors["embed"]  # [vocab, hidden]
        self.device, self.dtype = self.embed.device, self.embed.dtype
        pack = can_pack(self.device, self.dtype) if pack_weights is None else pack_weights
        self.lm_head = weights.linear("lm_head", pack)  # embed's if tied, unpacked
        self.final_norm = weights.tensors["final_norm"]
        self.eps = meta["eps"]
        self.vocab_size = self.lm_head.out_features
        self.max_rows, self.max_seq_len = max_rows, max_seq_len
        self.heads, self.kv_heads, self.head_dim = meta["heads"], meta["kv_heads"], meta["head_dim"]
        self.groups = self.heads // self.kv_heads
        self.scale = meta["scale"]
        self.layers = [_Layer(
            weights.tensors[f"layers.{i}.attn_norm"], weights.linear(f"layers.{i}.qkv", pack),
            weights.linear(f"layers.{i}.o", pack), weights.tensors[f"layers.{i}.mlp_norm"],
            weights.linear(f"layers.{i}.gate_up", pack), weights.linear(f"layers.{i}.down", pack),
            weights.act, window if window is not None and window < max_seq_len else None)
            for i, window in enumerate(meta["windows"])]
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.ffn_size = self.layers[0].gate_up.out_features // 2
        self.cos, self.sin = rope_tables(weights.tensors["inv_freq"], meta["attention_scaling"],
                                         max_seq_len, self.dtype)
        # The layers' norms and rotary: our kernel where it covers the model (fused None: where it
        # builds; True: or an error), else torch ops.
        self.ops = layer_ops(self.cos, self.sin, self.heads, self.kv_heads, self.head_dim,
                             self.scale, self.layers[0].act, native=fused)
        self.kv_bucket = kv_bucket
        self.lora = None  # LoRA hook: the served adapters (lora.LoraSet), set by the runner
        self.windows = {layer.window for layer in self.layers}  # one mask per distinct window
        self.use_decode_attention(attention, kv_cache_dtype)

    def use_decode_attention(self, choice: str, kv_cache_dtype: str = "auto") -> None:
        """Decode attention by DECODE_ATTENTION (our CPU kernel, torch ops, or "auto") over a KV
        cache by KV_CACHE_DTYPE, (re)allocated in the layout that attention reads: rows empty."""
        self.attention = self.k_cache = self.v_cache = None  # the old cache goes first
        torch_ops = Int8DecodeAttention if kv_cache_dtype == "int8" else DecodeAttention
        self.attention = choose_decode_attention(
            choice, self.device, self.dtype, self.heads, self.kv_heads, self.head_dim,
            lambda: torch_ops(len(self.layers), self.max_seq_len, self.kv_heads, self.head_dim,
                              self.dtype, self.kv_bucket, keep_buffers=self.device.type == "cpu"),
            kv_cache_dtype)
        self.k_cache, self.v_cache = self.attention.allocate_cache(
            len(self.layers), self.max_rows, self.max_seq_len, self.device)

    @torch.inference_mode()
    def copy_prefix(self, source: int, target: int, length: int) -> None:
        """Copy positions [0, length) of one row's keys and values to another row, all layers."""
        if not (0 <= source < self.max_rows and 0 <= target < self.max_rows
                and 0 <= length <= self.max_seq_len):
            raise IndexError(f"copy of {length} positions from row {source} to row {target} "
                             "outside the cache")
        self.attention.copy_positions(self.k_cache, self.v_cache, source, target, length)

    @torch.inference_mode()
    def step(self, decode_rows: torch.Tensor, decode_tokens: torch.Tensor,
             decode_positions: torch.Tensor, prefills: list[PrefillInput]) -> torch.Tensor:
        """Run one step; float32 logits [D + P, vocab]: decode rows, then each chunk's last
        position (every position of a chunk with all_logits).

        A row appears at most once per step, either decoding or in one prefill chunk.
        """
        self._check_bounds(decode_rows, decode_positions, prefills)
        try:
            return self._forward(decode_rows, decode_tokens, decode_positions, prefills)
        except BaseException:
            self.attention.reset()  # some layers' buffers may hold this step's token, some not
            raise

    def _forward(self, decode_rows, decode_tokens, decode_positions, prefills) -> torch.Tensor:
        """The step itself, once its rows and positions are known to fit the cache."""
        dev = self.device
        decode, restore = None, []
        if decode_rows.numel():  # decode tokens in group order: each group is one slice
            rows, decode_positions = decode_rows.to(dev), decode_positions.to(dev)
            groups = self.attention.group_rows(rows, decode_positions, self.windows)
            decode_tokens = decode_tokens.to(dev)
            restore = list(range(rows.numel()))
            if groups:  # grouped attention: rows in group order, logits back in the caller's
                order = torch.cat([g.index for g in groups])
                decode_tokens, decode_positions = decode_tokens[order], decode_positions[order]
                rows, restore = rows[order], order.argsort().tolist()
            decode = _DecodeLayout(rows, decode_positions, groups)
        chunks, offset = [], decode_rows.numel()
        for c in prefills:
            chunks.append(_PrefillLayout(c.row, c.start, offset, c.tokens.numel()))
            offset += c.tokens.numel()
        tokens = torch.cat([decode_tokens.to(dev)] + [c.tokens.to(dev) for c in prefills])  # [T]
        positions = torch.cat([decode_positions.to(dev)] + [
            torch.arange(c.start, c.start + c.n, device=dev) for c in chunks])  # [T]
        rope = self.ops.rope(positions)
        if self.lora is not None:  # LoRA hook: the step's tokens grouped by their row's adapter
            self.lora.begin_step(token_rows(None if decode is None else decode.rows, chunks, dev))
        self._chunk_masks(chunks)
        # x [T, hidden] is the residual stream, h its norm: each layer's input, and at the end
        # the final norm's output (each layer adds its parts and normalizes for the next).
        x, h = self.ops.norm(self.embed[tokens], None, self.layers[0].attn_norm, self.eps)
        for index, layer in enumerate(self.layers):
            after = self.layers[index + 1].attn_norm if index + 1 < len(self.layers) \
                else self.final_norm
            x, h = self._layer(index, layer, x, h, rope, decode, chunks, after)
        last = restore
        for c, p in zip(chunks, prefills):
            last = last + (list(range(c.offset, c.offset + c.n)) if p.all_logits
                           else [c.offset + c.n - 1])
        return self.lm_head(h[torch.tensor(last, device=dev)]).float()  # where logits are asked

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

    def _chunk_masks(self, chunks) -> None:
        """Prompt chunks' masks, one per distinct sliding window, shared by all layers."""
        for c in chunks:
            q_pos = torch.arange(c.start, c.start + c.n, device=self.device)
            c.kv_len = kv_extent(c.start + c.n, self.max_seq_len, self.kv_bucket)
            c.masks = {w: position_mask(q_pos, c.kv_len, w, self.dtype).repeat(self.groups, 1)
                       for w in self.windows}  # [groups * c, L], queries ordered as in _prefill

    def _layer(self, index, layer, x, h, rope, decode, chunks, after) -> tuple:
        """One decoder layer over all T tokens of the step: the residual stream x [T, hidden]
        and its norm h -> the same after the layer, h normalized by `after`'s weight."""
        t = x.shape[0]
        qkv = self._linear(index, "qkv", layer.qkv, h)
        q, k, v = self.ops.rotary(qkv, rope)  # [T, heads or kv, dim]; q scaled
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]  # one layer's, [rows, ...]
        out = q.new_empty(t, self.heads, self.head_dim)
        if decode is not None:
            d = decode.rows.numel()
            self._decode(index, q[:d], k[:d], v[:d], k_cache, v_cache, decode, layer.window,
                         out[:d])
        for c in chunks:
            span = slice(c.offset, c.offset + c.n)
            out[span] = self._prefill(q[span], k[span], v[span], k_cache, v_cache, c,
                                      c.masks[layer.window])
        attended = self._linear(index, "o", layer.o, out.view(t, -1))
        x, h = self.ops.norm(x, attended, layer.mlp_norm, self.eps)
        act = self.ops.silu_mul(self._linear(index, "gate_up", layer.gate_up, h))
        return self.ops.norm(x, self._linear(index, "down", layer.down, act), after, self.eps)

    def _linear(self, index: int, name: str, linear, x: torch.Tensor) -> torch.Tensor:
        """linear(x) [T, out]; LoRA hook: plus the adapters' products for their rows' tokens."""
        return linear(x) if self.lora is None else self.lora.add(index, name, x, linear(x))

    def _decode(self, index, q, k, v, k_cache, v_cache, plan, window, out) -> None:
        """Attention of one new token per row, q [D, heads, dim] and k/v [D, kv, dim], into out
        [D, heads, dim]."""
        shape = (q.shape[0], self.kv_heads, self.groups, self.head_dim)
        self.attention.run(index, q.view(shape), k, v, k_cache, v_cache, plan.rows,
                           plan.positions, plan.groups, window, out.view(shape))

    def _prefill(self, q, k, v, k_cache, v_cache, c, mask) -> torch.Tensor:
        """Causal attention of one prompt chunk over its row's cache: q [c, heads, dim] -> same."""
        n = c.n
        self.attention.write_prompt_keys(k_cache, c.row, c.start, k)
        self.attention.write_prompt_values(v_cache, c.row, c.start, v)
        # [c, heads, dim] -> [kv, groups * c, dim]: a group's queries share their kv head
        qc = q.view(n, self.kv_heads, self.groups, self.head_dim).permute(1, 2, 0, 3)
        qc = qc.reshape(self.kv_heads, self.groups * n, self.head_dim)
        keys = self.attention.prompt_keys(k_cache, c.row, c.kv_len)  # [kv, dim, kv_len]
        o = attend_row(qc, keys, self.attention.prompt_values(v_cache, c.row, c.kv_len), mask)
        o = o.view(self.kv_heads, self.groups, n, self.head_dim).permute(2, 0, 1, 3)
        return o.reshape(n, self.heads, self.head_dim)
