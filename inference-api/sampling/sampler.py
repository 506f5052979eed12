"""A sampler that draws the next token of many rows at once, each row with its own parameters."""
from __future__ import annotations

import math
import secrets

import torch

from inference_api.sampling_params import MAX_EXTRA_EOS, SamplingParams, check_token_ids  # noqa: F401 - SamplingParams re-exported
from inference_api.process_messages import TokenLogprob

_M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (a bijection) of int64 values in [0, 2**32), elementwise."""
    # Multipliers stay below 2**31 so no int64 product overflows: results are exact on any device.
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def uniforms(seed_lo: torch.Tensor, seed_hi: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One float32 in [0, 1) per (seed, step): a row's random stream depends on nothing else."""
    key = mix32(mix32(mix32(seed_lo) ^ seed_hi) ^ (step & _M32))  # [n]
    return (mix32(key ^ 0x5BD1E995) >> 8).to(torch.float32) * 2.0 ** -24  # 24 bits: exact


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Column drawn from each row of non-negative weights [n, k] with uniforms u [n] -> [n]."""
    # A sequential scan per row (accumulated in double on CPU): batch-independent and precise.
    cum = torch.cumsum(weights, -1, out=scratch)
    total = cum[:, -1:].contiguous()
    # The first column whose cumulative weight passes u * total; zero-weight columns never are,
    # and rounding of u * total up to total is caught by capping at the last weighted column.
    pick = torch.searchsorted(cum, u[:, None] * total, right=True)
    return torch.minimum(pick, torch.searchsorted(cum, total))[:, 0]


# The top-p nucleus is looked for among each row's this many heaviest tokens first; sorting those
# alone is several times cheaper than sorting the whole vocabulary. Rows whose nucleus reaches
# past them (a very flat distribution) fall back to the full sort.
NUCLEUS_CANDIDATES = 1024


def nucleus_floor(w: torch.Tensor, top_p: torch.Tensor, scratch: torch.Tensor,
                  scratch2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The smallest weight in each row's top-p nucleus ([n, vocab] -> [n, 1])."""
    vocab = w.shape[1]
    k = min(vocab, NUCLEUS_CANDIDATES)
    if w.device.type != "cpu" or k == vocab:
        return _nucleus_floor_sorted(w, top_p, scratch, scratch2, mask)
    # numpy's partition puts each row's k heaviest weights last, in place; only those get sorted.
    part = scratch.copy_(w)
    part.numpy().partition(vocab - k, axis=-1)
    top = part[:, vocab - k:]
    top.numpy().sort(axis=-1)  # ascending
    rest = part[:, :vocab - k].sum(-1, keepdim=True)  # every lighter token, in any order
    cum = torch.cumsum(top, -1).add_(rest)  # mass up to and including each candidate, from below
    # A token is kept while the mass above it is short of top_p: the mass up to and including
    # it exceeds 1 - top_p (see _nucleus_floor_sorted).
    kept = torch.gt(cum, (1 - top_p[:, None]) * cum[:, -1:]).sum(-1, keepdim=True)  # [n, 1]
    floor = top.gather(1, (k - kept).clamp_(max=k - 1))
    spill = (kept == k)[:, 0]  # the nucleus may reach below the candidates
    if spill.any():
        i = spill.nonzero()[:, 0]
        n = i.numel()
        floor[i] = _nucleus_floor_sorted(w[i], top_p[i], scratch[:n], scratch2[:n], mask[:n])
    return floor


def _nucleus_floor_sorted(w: torch.Tensor, top_p: torch.Tensor, scratch: torch.Tensor,
                          scratch2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """nucleus_floor by sorting every weight of each row."""
    asc = scratch.copy_(w)
    if asc.device.type == "cpu":  # numpy sorts values in place, far faster than torch.sort on CPU
        asc.numpy().sort(axis=-1)
    else:
        asc = asc.sort(-1).values
    cum = torch.cumsum(asc, -1, out=scratch2)  # ascending: the tail's small sums stay precise
    # A token is kept while the mass above it is short of top_p, i.e. the mass up to and
    # including it (from the bottom) exceeds 1 - top_p: the smallest set that reaches top_p.
    kept = torch.gt(cum, (1 - top_p[:, None]) * cum[:, -1:], out=mask).sum(-1, keepdim=True)
    return asc.gather(1, (asc.shape[1] - kept).clamp_(max=asc.shape[1] - 1))


def draw_whole(x: torch.Tensor, inv_t: torch.Tensor, u: torch.Tensor, top_p: torch.Tensor,
               min_p: torch.Tensor, need_floor: bool, need_top_p: bool, ws) -> torch.Tensor:
    """Sample rows without top_k over the whole vocabulary ([n, vocab] -> [n] token ids)."""
    n = x.shape[0]
    buf, buf2, buf3, mask = (t[:n] for t in ws)
    # Weights relative to the best token: exp((x - max) / T), in token id order.
    w = torch.sub(x, x.amax(-1, keepdim=True), out=buf).mul_(inv_t[:, None]).exp_()
    if need_floor:
        floor = min_p[:, None]  # min_p compares with the best token, whose weight is 1
        if need_top_p:
            floor = torch.maximum(floor, nucleus_floor(w, top_p, buf2, buf3, mask))
        w.masked_fill_(torch.lt(w, floor, out=mask), 0.0)
    return inverse_cdf(w, u, buf2)


def draw_top_k(x: torch.Tensor, inv_t: torch.Tensor, u: torch.Tensor, top_k: torch.Tensor,
               top_p: torch.Tensor, min_p: torch.Tensor, k: int) -> torch.Tensor:
    """Sample rows with top_k from their k best tokens; top_p applies within the top k."""
    vals, idx = x.topk(k, dim=-1)  # [n, k] best first; dividing by T keeps the order
    rank = torch.arange(k, device=x.device)
    e = (vals - vals[:, :1]).mul_(inv_t[:, None]).exp_().masked_fill_(rank >= top_k[:, None], 0.0)
    cum = e.cumsum(-1)
    total = cum.gather(1, top_k[:, None] - 1)  # prefix sums only: no batch-dependent reduction
    e.masked_fill_(((cum - e) >= top_p[:, None] * total) | (e < min_p[:, None]), 0.0)
    # Draw in token id order so ties among equal logits cannot reorder the cumulative sum.
    idx, order = idx.sort(-1)
    return idx.gather(1, inverse_cdf(e.gather(1, order), u, torch.empty_like(e))[:, None])[:, 0]


class RowSampler:
    """Sampling state of every row of the batch; draws the next token of many rows in one go."""

    def __init__(self, max_rows: int, vocab_size: int, device, default_eos_ids: tuple[int, ...]):
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.default_eos = tuple(int(t) for t in default_eos_ids)
        self.params: list[SamplingParams | None] = [None] * max_rows
        self.bias: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * max_rows  # ids, values
        d, f = self.device, torch.float32
        self.temperature = torch.ones(max_rows, dtype=f, device=d)
        self.top_k = torch.zeros(max_rows, dtype=torch.long, device=d)
        self.top_p = torch.ones(max_rows, dtype=f, device=d)
        self.min_p = torch.zeros(max_rows, dtype=f, device=d)
        self.rep = torch.ones(max_rows, dtype=f, device=d)
        self.presence = torch.zeros(max_rows, dtype=f, device=d)
        self.frequency = torch.zeros(max_rows, dtype=f, device=d)
        self.seed_lo = torch.zeros(max_rows, dtype=torch.long, device=d)
        self.seed_hi = torch.zeros(max_rows, dtype=torch.long, device=d)
        self.step = torch.zeros(max_rows, dtype=torch.long, device=d)  # tokens drawn so far
        self.min_tokens = torch.zeros(max_rows, dtype=torch.long, device=d)
        self.ignore_eos = torch.zeros(max_rows, dtype=torch.bool, device=d)
        self.counts = torch.zeros(max_rows, vocab_size, dtype=f, device=d)  # generated tokens
        self.seen = torch.zeros(max_rows, vocab_size, dtype=torch.bool, device=d)  # prompt+output
        # EOS ids of each row, padded by repeating the first so a gather/scatter needs no mask.
        self.eos_cols = torch.zeros(max_rows, len(self.default_eos) + MAX_EXTRA_EOS,
                                    dtype=torch.long, device=d)
        # Reused buffers for the full-vocabulary draw: fresh [rows, vocab] allocations cost
        # more than the arithmetic on them.
        self.workspace = tuple(torch.empty(max_rows, vocab_size, dtype=t, device=d)
                               for t in (f, f, f, torch.bool))

    def add(self, row: int, params: SamplingParams, prompt_ids: list[int]) -> None:
        """Start a request in a row: store its parameters and reset its penalty state."""
        check_token_ids("eos_token_ids", params.eos_token_ids, self.vocab_size)
        check_token_ids("logit_bias", [t for t, _ in params.logit_bias], self.vocab_size)
        seed = secrets.randbits(64) if params.seed is None else params.seed & (2 ** 64 - 1)
        eos = self.default_eos + tuple(t for t in params.eos_token_ids if t not in self.default_eos)
        self.params[row] = params
        for name, value in (("temperature", params.temperature), ("top_p", params.top_p),
                            ("top_k", params.top_k), ("min_p", params.min_p),
                            ("rep", params.repetition_penalty), ("presence", params.presence_penalty),
                            ("frequency", params.frequency_penalty), ("seed_lo", seed & _M32),
                            ("seed_hi", seed >> 32), ("step", 0), ("min_tokens", params.min_tokens),
                            ("ignore_eos", params.ignore_eos and bool(eos)), ("counts", 0),
                            ("seen", False)):
            getattr(self, name)[row] = value
        if params.repetition_penalty != 1 and prompt_ids:
            ids = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)
            self.seen[row, ids.clamp(0, self.vocab_size - 1)] = True
        cols = list(eos) or [0]
        self.eos_cols[row] = torch.tensor(cols + cols[:1] * (self.eos_cols.shape[1] - len(cols)))
        if not eos:  # no EOS id at all: nothing to ban
            self.min_tokens[row] = 0
        self.bias[row] = None
        if params.logit_bias:
            ids, values = zip(*params.logit_bias)
            self.bias[row] = (torch.tensor(ids, dtype=torch.long, device=self.device),
                              torch.tensor(values, dtype=torch.float32, device=self.device))

    def remove(self, row: int) -> None:
        """Forget a row's request."""
        self.params[row] = None
        self.bias[row] = None

    def sample(self, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Next token of each row: rows [n] int64, logits [n, vocab] -> tokens [n] int64.

        The logits are consumed: the sampler may write into them (a copy of a [rows, vocab]
        tensor every step would cost more than the sampling).
        """
        return self.sample_with_logprobs(rows, logits)[0]

    def sample_with_logprobs(self, rows: torch.Tensor, logits: torch.Tensor
                             ) -> tuple[torch.Tensor, list[TokenLogprob | None]]:
        """sample(), and for each row that asked for them its token's log probabilities.

        They are the log-softmax of the logits the draw starts from: after logit_bias, the
        penalties and a structured output's mask, before temperature, top_k, top_p and min_p.
        """
        rows = rows.to(self.device)
        params = [self.params[r] for r in rows.tolist()]
        x = self._adjusted(rows, params, logits.to(self.device, torch.float32))  # [n, vocab]
        tokens = self._pick(rows, params, x)
        wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
        logprobs: list[TokenLogprob | None] = [None] * len(params)
        if wanted:
            top = max(params[i].logprobs for i in wanted)
            found = token_logprobs(x[wanted], tokens[wanted], top)
            for i, entry in zip(wanted, found):
                logprobs[i] = TokenLogprob(entry.token_id, entry.logprob,
                                           entry.top[:params[i].logprobs])
        self.counts[rows, tokens] += 1  # rows are distinct, so plain indexing adds once per row
        self.seen[rows, tokens] = True
        self.step[rows] += 1
        return tokens, logprobs

    def _adjusted(self, rows: torch.Tensor, params: list, x: torch.Tensor) -> torch.Tensor:
        """The logits with each row's penalties, logit_bias and EOS ban applied."""
        pen = [i for i, p in enumerate(params) if p.penalised]
        if pen:
            base = x.clone() if len(pen) < len(params) else x
            x = _apply(base, pen, self._penalise, rows, x)
        biased = [(i, self.bias[r]) for i, r in enumerate(rows.tolist()) if self.bias[r]]
        if biased:
            i = torch.cat([torch.full_like(ids, i) for i, (ids, _) in biased])
            ids = torch.cat([ids for _, (ids, _) in biased])
            x.index_put_((i, ids), torch.cat([v for _, (_, v) in biased]), accumulate=True)
        if any(p.min_tokens or p.ignore_eos for p in params):
            x = self._ban_eos(rows, x)
        return x

    def _pick(self, rows: torch.Tensor, params: list, x: torch.Tensor) -> torch.Tensor:
        """Each row's token from its adjusted logits: the argmax, or a draw."""
        tokens = torch.empty(len(params), dtype=torch.long, device=self.device)
        greedy = [i for i, p in enumerate(params) if p.greedy]
        tokens = _apply(tokens, greedy, lambda r, sub: sub.argmax(-1), rows, x)
        drawn = [i for i, p in enumerate(params) if not p.greedy]
        return _apply(tokens, drawn, self._draw, rows, x)

    def _penalise(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Repetition (over prompt + output) then presence/frequency (over output) penalties."""
        # Only the seen columns change, so work on those (output tokens are always marked seen).
        r, c = self.seen[rows].nonzero(as_tuple=True)  # [s] each
        row = rows[r]
        v = x[r, c]
        rep = self.rep[row]
        v = torch.where(v > 0, v / rep, v * rep)
        counts = self.counts[row, c]
        v = v - counts * self.frequency[row] - (counts > 0).float() * self.presence[row]
        return x.index_put((r, c), v)

    def _ban_eos(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Set EOS logits to -inf, in place, for rows under min_tokens or with ignore_eos."""
        banned = (self.step[rows] < self.min_tokens[rows]) | self.ignore_eos[rows]  # [n]
        cols = self.eos_cols[rows]  # [n, width]
        return x.scatter_(1, cols, x.gather(1, cols).masked_fill_(banned[:, None], -math.inf))

    def _draw(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Sample rows with temperature > 0 from their filtered distributions ([m, vocab] -> [m])."""
        params = [self.params[r] for r in rows.tolist()]
        inv_t = 1.0 / self.temperature[rows]  # [m]
        u = uniforms(self.seed_lo[rows], self.seed_hi[rows], self.step[rows])  # [m]
        out = torch.empty(len(params), dtype=torch.long, device=self.device)
        whole = [i for i, p in enumerate(params) if not p.top_k]
        need_top_p = any(params[i].top_p < 1 for i in whole)
        need_floor = need_top_p or any(params[i].min_p > 0 for i in whole)
        out = _apply(out, whole, lambda r, sub, it, uu: draw_whole(
            sub, it, uu, self.top_p[r], self.min_p[r], need_floor, need_top_p, self.workspace),
            rows, x, inv_t, u)
        cut = [i for i, p in enumerate(params) if p.top_k]
        k = min(self.vocab_size, max((params[i].top_k for i in cut), default=1))
        return _apply(out, cut, lambda r, sub, it, uu: draw_top_k(
            sub, it, uu, self.top_k[r].clamp(max=k), self.top_p[r], self.min_p[r], k),
            rows, x, inv_t, u)


# A log probability of minus infinity (a token a structured output rules out) is sent as this,
# as vLLM does: JSON has no infinity.
LOGPROB_FLOOR = -9999.0


def token_logprobs(x: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """Each row's token log probability and its `top` likeliest tokens ([n, vocab], [n])."""
    logp = torch.log_softmax(x, -1)  # [n, vocab]
    chosen = logp.gather(1, tokens[:, None])[:, 0].clamp_(min=LOGPROB_FLOOR).tolist()
    if top:
        values, ids = logp.topk(top, -1)  # [n, top]
        tops = [tuple(zip(i, v)) for i, v in zip(ids.tolist(),
                                                  values.clamp_(min=LOGPROB_FLOOR).tolist())]
    else:
        tops = [()] * len(chosen)
    return [TokenLogprob(t, lp, alt) for t, lp, alt in zip(tokens.tolist(), chosen, tops)]


def _apply(out: torch.Tensor, idx: list[int], fn, *tensors: torch.Tensor) -> torch.Tensor:
    """out with rows idx set to fn(*(t[idx] for t in tensors)); no gathers when idx is all rows."""
    if not idx:
        return out
    if len(idx) == out.shape[0]:  # idx lists are ascending and distinct: all rows, in order
        return fn(*tensors)
    i = torch.tensor(idx, device=out.device)
    out[i] = fn(*(t[i] for t in tensors))
    return out
