"""Batched forward pass for Llama-like models over a KV cache preallocated for fixed rows (the
families of architectures, their differences switched on per model).

One `step` runs a single new token for every decoding row plus prompt chunks of newly admitted
rows (chunked prefill) through the model together, so the weights are read once per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention.int8_cache import Int8DecodeAttention
from .attention.native_decode import choose_decode_attention
from .attention.ops import softcap
from .attention.torch_decode import KV_BUCKET, DecodeAttention
from .fused import layer_ops
from .invariant import attention_choice, tile_products
from .linear import Linear, can_pack
from .lora import token_rows
from .prompt_chunks import PromptAttention
from .rope import rope_tables
from .step_bounds import check_bounds
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
    rope: str | None  # the name of its rope tables, None for a layer without rotary (SmolLM3)
    norms: dict  # the family's other norms: q_norm, k_norm, post_attn_norm, post_mlp_norm


@dataclass
class _DecodeLayout:
    """The decoding rows of a step, split into groups of similar length once per step."""

    rows: torch.Tensor  # [D], in group order
    positions: torch.Tensor  # [D], in group order
    groups: list = field(default_factory=list)  # of attention.DecodeGroup


class DecoderModel:
    """Our own forward pass over the weights of a model of a supported architecture: a
    ModelWeights (from the weight cache) or a loaded transformers model."""

    def __init__(self, model, max_rows: int, max_seq_len: int, kv_bucket: int = KV_BUCKET,
                 pack_weights: bool | None = None, attention: str = "auto",
                 fused: bool | None = None, quantization: str = "none",
                 kv_cache_dtype: str = "auto", batch_invariant: bool = False):
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
            weights.act, window if window is not None and window < max_seq_len else None,
            meta["layer_rope"][i], weights.other_norms(i))
            for i, window in enumerate(meta["windows"])]
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.ffn_size = self.layers[0].gate_up.out_features // 2
        tables = {name: tuple(t.to(self.device) for t in rope_tables(p, max_seq_len, self.dtype))
                  for name, p in meta["rope"].items()}  # [max_seq_len, rotated dims] each
        # The layers' norms and rotary: our kernel where it covers the model (fused None: where it
        # builds; True: or an error), else torch ops.
        self.ops = layer_ops(tables, self.heads, self.kv_heads, self.head_dim, self.scale,
                             self.layers[0].act, meta["gemma_norms"], native=fused)
        scale = meta["embed_scale"]  # a float32 tensor cast to the dtype, as transformers has it
        self.embed_scale = None if scale is None else torch.tensor(scale).to(self.dtype)
        self.attn_softcap, self.final_softcap = meta["attn_softcap"], meta["final_softcap"]
        self.kv_bucket = kv_bucket
        self.lora = None  # LoRA hook: the served adapters (lora.LoraSet), set by the runner
        self.windows = {layer.window for layer in self.layers}  # one mask per distinct window
        self.batch_invariant = batch_invariant
        self.prompts = PromptAttention(self.kv_heads, self.groups, self.head_dim, max_seq_len,
                                       kv_bucket, self.windows, self.attn_softcap, batch_invariant)
        if batch_invariant:
            self.lm_head = tile_products(self.layers, self.lm_head)
        self.use_decode_attention(attention, kv_cache_dtype)

    def use_decode_attention(self, choice: str, kv_cache_dtype: str = "auto") -> None:
        """Decode attention by DECODE_ATTENTION (our CPU kernel, torch ops, or "auto") over a KV
        cache by KV_CACHE_DTYPE, (re)allocated in the layout that attention reads: rows empty."""
        self.attention = self.k_cache = self.v_cache = None  # the old cache goes first
        torch_ops = Int8DecodeAttention if kv_cache_dtype == "int8" else DecodeAttention
        choice = attention_choice(choice) if self.batch_invariant else choice
        self.attention = choose_decode_attention(
            choice, self.device, self.dtype, self.heads, self.kv_heads, self.head_dim,
            lambda: torch_ops(len(self.layers), self.max_seq_len, self.kv_heads, self.head_dim,
                              self.dtype, self.kv_bucket, keep_buffers=self.device.type == "cpu"),
            kv_cache_dtype)
        self.attention.softcap = self.attn_softcap
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
        check_bounds(decode_rows, decode_positions, prefills, self.max_rows, self.max_seq_len)
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
        chunks = self.prompts.layouts(prefills, decode_rows.numel(), self.dtype, dev)
        tokens = torch.cat([decode_tokens.to(dev)] + [c.tokens.to(dev) for c in prefills])  # [T]
        positions = torch.cat([decode_positions.to(dev)] + [
            torch.arange(c.start, c.start + c.n, device=dev) for c in chunks])  # [T]
        rope = self.ops.rope(positions)
        if self.lora is not None:  # LoRA hook: the step's tokens grouped by their row's adapter
            self.lora.begin_step(token_rows(None if decode is None else decode.rows, chunks, dev))
        # x [T, hidden] is the residual stream, h its norm: each layer's input, and at the end
        # the final norm's output (each layer adds its parts and normalizes for the next).
        x = self.embed[tokens]  # [T, hidden], Gemma's scaled
        x = x if self.embed_scale is None else x * self.embed_scale
        x, h = self.ops.norm(x, None, self.layers[0].attn_norm, self.eps)
        for index, layer in enumerate(self.layers):
            after = self.layers[index + 1].attn_norm if index + 1 < len(self.layers) \
                else self.final_norm
            x, h = self._layer(index, layer, x, h, rope, decode, chunks, after)
        last = restore
        for c, p in zip(chunks, prefills):
            last = last + (list(range(c.offset, c.offset + c.n)) if p.all_logits
                           else [c.offset + c.n - 1])
        logits = self.lm_head(h[torch.tensor(last, device=dev)])  # where logits are asked
        return softcap(logits, self.final_softcap).float()

    def _layer(self, index, layer, x, h, rope, decode, chunks, after) -> tuple:
        """One decoder layer over all T tokens of the step: the residual stream x [T, hidden]
        and its norm h -> the same after the layer, h normalized by `after`'s weight."""
        t = x.shape[0]
        qkv = self._linear(index, "qkv", layer.qkv, h)
        q, k, v = self.ops.rotary(qkv, rope.get(layer.rope), layer.norms.get("q_norm"),
                                  layer.norms.get("k_norm"), self.eps)  # [T, heads or kv, dim]
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]  # one layer's, [rows, ...]
        out = q.new_empty(t, self.heads, self.head_dim)
        if decode is not None:
            d = decode.rows.numel()
            self._decode(index, q[:d], k[:d], v[:d], k_cache, v_cache, decode, layer.window,
                         out[:d])
        for c in chunks:
            span = slice(c.offset, c.offset + c.n)
            self.prompts.run(self.attention, q[span], k[span], v[span], k_cache, v_cache, c,
                             layer.window, out[span])
        attended = self._post_norm(self._linear(index, "o", layer.o, out.view(t, -1)),
                                   layer.norms.get("post_attn_norm"))
        x, h = self.ops.norm(x, attended, layer.mlp_norm, self.eps)
        act = self.ops.silu_mul(self._linear(index, "gate_up", layer.gate_up, h))
        mlp = self._post_norm(self._linear(index, "down", layer.down, act),
                              layer.norms.get("post_mlp_norm"))
        return self.ops.norm(x, mlp, after, self.eps)

    def _linear(self, index: int, name: str, linear, x: torch.Tensor) -> torch.Tensor:
        """linear(x) [T, out]; LoRA hook: plus the adapters' products for their rows' tokens."""
        return linear(x) if self.lora is None else self.lora.add(index, name, x, linear(x))

    def _post_norm(self, delta: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """A part's output normalized before it joins the residual stream (Gemma), else as is."""
        return delta if weight is None else self.ops.norm(delta, None, weight, self.eps)[1]

    def _decode(self, index, q, k, v, k_cache, v_cache, plan, window, out) -> None:
        """Attention of one new token per row, q [D, heads, dim] and k/v [D, kv, dim], into out
        [D, heads, dim]."""
        shape = (q.shape[0], self.kv_heads, self.groups, self.head_dim)
        self.attention.run(index, q.view(shape), k, v, k_cache, v_cache, plan.rows,
                           plan.positions, plan.groups, window, out.view(shape))
