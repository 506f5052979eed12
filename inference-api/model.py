"""Batched forward pass for Llama-family models over a KV cache preallocated for fixed rows.

One `step` runs a single new token for every decoding row plus prompt chunks of newly admitted
rows (chunked prefill) through the model together, so the weights are read once per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    """One decoder layer's weights (biases may be None)."""

    attn_norm: torch.Tensor
    qkv: tuple  # q, k and v projections stacked: one matrix product instead of three
    o: tuple
    mlp_norm: torch.Tensor
    gate_up: tuple  # gate and up projections stacked
    down: tuple
    act: object
    window: int | None  # sliding-window size, None for full attention


@dataclass
class _DecodeGroup:
    """Decoding rows of similar length, attended together over cache positions [:kv_len]."""

    index: torch.Tensor  # [g] where these rows sit among the step's decode tokens
    rows: torch.Tensor  # [g] their cache rows
    kv_len: int
    masks: dict  # sliding window -> additive mask [g, 1, 1, kv_len]


@dataclass
class _DecodePlan:
    """The decoding rows of a step, split into groups of similar length once per step."""

    rows: torch.Tensor  # [D]
    positions: torch.Tensor  # [D]
    groups: list = field(default_factory=list)  # of _DecodeGroup


# A group costs a fixed number of kernel launches per layer; in cache reads that is about as
# much as this many (row, position) pairs, measured on CPU. Splitting rows into groups pays off
# when it saves more padded reads than that.
GROUP_OVERHEAD = 256


def length_groups(lengths: list[int], overhead: int = GROUP_OVERHEAD) -> list[list[int]]:
    """Split indices into groups of similar length, minimising padded reads plus group overhead.

    Each group reads every one of its rows up to its longest, so one long prompt would otherwise
    make every row pay for its length. Exact dynamic programming over the sorted lengths.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    best, cut = [0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * ordered[end - 1] + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


@dataclass
class _ChunkPlan:
    """One prefill chunk of a step: its row, sequence start and offset among the step's tokens."""

    row: int
    start: int
    offset: int
    n: int
    masks: dict | None = None  # sliding window -> additive mask [groups * n, start + n]


def _linear_params(module) -> tuple:
    """(weight, bias) of an nn.Linear, shared with the module rather than copied."""
    return module.weight, module.bias


def _stacked(*modules) -> tuple:
    """(weight, bias) of several nn.Linear stacked along their outputs, for one matrix product."""
    weight = torch.cat([m.weight for m in modules])
    biases = [m.bias for m in modules]
    if all(b is None for b in biases):
        return weight, None
    return weight, torch.cat([b if b is not None else weight.new_zeros(m.weight.shape[0])
                              for b, m in zip(biases, modules)])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32, cast back before the weight multiply, exactly as transformers does."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half convention) of x [T, heads, dim]; cos/sin [T, 1, dim]."""
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


def attend(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of grouped queries q [b, kv_heads, n, dim] over k_t [b, kv_heads, dim, L] and
    v [b, kv_heads, L, dim] with an additive float32 mask broadcastable to [b, kv_heads, n, L].

    Several query heads share one kv head, so q stacks the group's queries along n and K/V are
    never repeated. Softmax in float32 (the mask promotes the scores), probabilities cast back.
    """
    b, kv, n, _ = q.shape
    scores = torch.bmm(q.flatten(0, 1), k_t.flatten(0, 1)).view(b, kv, n, -1) + mask  # float32
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.bmm(probs.flatten(0, 1), v.flatten(0, 1)).view(b, kv, n, -1)  # [b, kv, n, dim]


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
                layer.input_layernorm.weight,
                _stacked(attn.q_proj, attn.k_proj, attn.v_proj),
                _linear_params(attn.o_proj), layer.post_attention_layernorm.weight,
                _stacked(mlp.gate_proj, mlp.up_proj),
                _linear_params(mlp.down_proj), mlp.act_fn,
                window if window is not None and window < max_seq_len else None))
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.ffn_size = inner.layers[0].mlp.gate_proj.weight.shape[0]
        rotary = inner.rotary_emb
        self.cos, self.sin = rope_tables(rotary.inv_freq, rotary.attention_scaling, max_seq_len,
                                         self.dtype)
        # K is stored transposed, [layers, rows, kv_heads, head_dim, seq], so that q @ K^T
        # multiplies by a plain row-major [head_dim, L] matrix: measured ~1.5x faster on CPU in
        # bfloat16 than the transposed [L, head_dim] one. V is [layers, rows, kv_heads, seq, dim].
        # Zero-filled once so never-written positions are finite (masked, but 0 * NaN = NaN).
        layers, kv, dim = len(self.layers), self.kv_heads, self.head_dim
        self.k_cache = torch.zeros((layers, max_rows, kv, dim, max_seq_len), dtype=self.dtype,
                                   device=self.device)
        self.v_cache = torch.zeros((layers, max_rows, kv, max_seq_len, dim), dtype=self.dtype,
                                   device=self.device)

    @torch.inference_mode()
    def step(self, decode_rows: torch.Tensor, decode_tokens: torch.Tensor,
             decode_positions: torch.Tensor, prefills: list[PrefillChunk]) -> torch.Tensor:
        """Run one step; float32 logits [D + len(prefills), vocab]: decode rows, then chunk ends.

        A row appears at most once per step, either decoding or in one prefill chunk.
        """
        dev = self.device
        self._check_bounds(decode_rows, decode_positions, prefills)
        decode = _DecodePlan(decode_rows.to(dev), decode_positions.to(dev)) \
            if decode_rows.numel() else None
        chunks, offset = [], decode_rows.numel()
        for c in prefills:
            chunks.append(_ChunkPlan(c.row, c.start, offset, c.tokens.numel()))
            offset += c.tokens.numel()
        tokens = torch.cat([decode_tokens.to(dev)] + [c.tokens.to(dev) for c in prefills])  # [T]
        positions = torch.cat([decode_positions.to(dev)] + [
            torch.arange(c.start, c.start + c.n, device=dev) for c in chunks])  # [T]
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [T, 1, dim]
        self._build_masks(decode, chunks)
        x = self.embed[tokens]  # [T, hidden]
        for index, layer in enumerate(self.layers):
            x = self._layer(index, layer, x, cos, sin, decode, chunks)
        last = list(range(decode_rows.numel())) + [c.offset + c.n - 1 for c in chunks]
        h = rms_norm(x[torch.tensor(last, device=dev)], self.final_norm, self.eps)
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

    def _build_masks(self, decode, chunks) -> None:
        """Masks of this step, one per distinct sliding window, shared by all layers."""
        windows = {layer.window for layer in self.layers}
        if decode is not None:
            lengths = [p + 1 for p in decode.positions.tolist()]
            for members in length_groups(lengths, GROUP_OVERHEAD):
                index = torch.tensor(members, device=self.device)
                positions = decode.positions[index]
                kv_len = max(lengths[i] for i in members)  # read only cache[:kv_len]
                masks = {w: position_mask(positions, kv_len, w)[:, None, None] for w in windows}
                decode.groups.append(_DecodeGroup(index, decode.rows[index], kv_len, masks))
        for c in chunks:
            q_pos = torch.arange(c.start, c.start + c.n, device=self.device)
            c.masks = {w: position_mask(q_pos, c.start + c.n, w).repeat(self.groups, 1)
                       for w in windows}  # [groups * c, L], queries ordered as in _prefill

    def _layer(self, index, layer, x, cos, sin, decode, chunks) -> torch.Tensor:
        """One decoder layer over all T tokens of the step: x [T, hidden] -> [T, hidden]."""
        t = x.shape[0]
        h = rms_norm(x, layer.attn_norm, self.eps)
        q, k, v = F.linear(h, *layer.qkv).split((self.q_size, self.kv_size, self.kv_size), -1)
        q = rotate(q.view(t, self.heads, self.head_dim), cos, sin)
        k = rotate(k.view(t, self.kv_heads, self.head_dim), cos, sin)
        v = v.reshape(t, self.kv_heads, self.head_dim)
        q = q * self.scale  # scaling q is cheaper than scaling the scores
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]  # [rows, kv, dim|seq, seq|dim]
        out = torch.empty_like(q)  # [T, heads, dim]
        if decode is not None:
            d = decode.rows.numel()
            out[:d] = self._decode(q[:d], k[:d], v[:d], k_cache, v_cache, decode, layer.window)
        for c in chunks:
            span = slice(c.offset, c.offset + c.n)
            out[span] = self._prefill(q[span], k[span], v[span], k_cache, v_cache, c,
                                      c.masks[layer.window])
        x = x + F.linear(out.view(t, -1), *layer.o)
        h = rms_norm(x, layer.mlp_norm, self.eps)
        gate, up = F.linear(h, *layer.gate_up).split(self.ffn_size, -1)
        return x + F.linear(layer.act(gate) * up, *layer.down)

    def _decode(self, q, k, v, k_cache, v_cache, plan, window) -> torch.Tensor:
        """Attention of one new token per row: q [D, heads, dim], k/v [D, kv, dim] -> like q."""
        d = q.shape[0]
        k_cache.permute(0, 3, 1, 2).index_put_((plan.rows, plan.positions), k)  # [rows, seq, kv, dim]
        v_cache.transpose(1, 2).index_put_((plan.rows, plan.positions), v)
        q = q.view(d, self.kv_heads, self.groups, self.head_dim)
        out = torch.empty_like(q)  # [D, kv, groups, dim]
        for group in plan.groups:
            g, L = group.rows.numel(), group.kv_len
            # Gather [:L] of the group's rows into contiguous tensors: the CPU bfloat16 batched
            # matmul would copy the strided cache slice anyway, so this costs nothing extra and
            # serves any subset and order of rows. (index_select is much faster on K as 3-d.)
            k_t = k_cache.flatten(1, 2)[..., :L].index_select(0, group.rows)  # [g, kv * dim, L]
            k_t = k_t.view(g, self.kv_heads, self.head_dim, L)
            v_rows = v_cache[:, :, :L].index_select(0, group.rows)  # [g, kv, L, dim]
            out[group.index] = attend(q[group.index], k_t, v_rows, group.masks[window])
        return out.view(d, self.heads, self.head_dim)

    def _prefill(self, q, k, v, k_cache, v_cache, c, mask) -> torch.Tensor:
        """Causal attention of one prompt chunk over its row's cache: q [c, heads, dim] -> same."""
        n, end = c.n, c.start + c.n
        k_cache[c.row, :, :, c.start:end] = k.permute(1, 2, 0)  # [kv, dim, c]
        v_cache[c.row, :, c.start:end] = v.transpose(0, 1)  # [kv, c, dim]
        # [c, heads, dim] -> [1, kv, groups * c, dim]: a group's queries share their kv head
        qc = q.view(n, self.kv_heads, self.groups, self.head_dim).permute(1, 2, 0, 3)
        qc = qc.reshape(1, self.kv_heads, self.groups * n, self.head_dim)
        o = attend(qc, k_cache[c.row:c.row + 1, ..., :end], v_cache[c.row:c.row + 1, :, :end], mask)
        o = o.view(self.kv_heads, self.groups, n, self.head_dim).permute(2, 0, 1, 3)
        return o.reshape(n, self.heads, self.head_dim)
