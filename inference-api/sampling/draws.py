"""Drawing tokens from logits, as pure functions over a batch of rows ([rows, vocab] -> [rows]).

Each row's random number comes from its own seed and step alone (a counter-based hash), and
every cumulative sum runs along one row: a row's draw does not depend on the rows beside it.
"""
from __future__ import annotations

import torch

M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (a bijection) of int64 values in [0, 2**32), elementwise."""
    # Multipliers stay below 2**31 so no int64 product overflows: results are exact on any device.
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & M32
    return x ^ (x >> 15)


def uniforms(seed_lo: torch.Tensor, seed_hi: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One float32 in [0, 1) per (seed, step): a row's random stream depends on nothing else."""
    key = mix32(mix32(mix32(seed_lo) ^ seed_hi) ^ (step & M32))  # [n]
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
