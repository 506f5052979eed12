"""A sampler that draws the next token of many rows at once, each row with its own parameters."""
from __future__ import annotations

import math
import secrets

import torch

from inference_api.process_messages import TokenLogprob
from inference_api.sampling_params import MAX_EXTRA_EOS, SamplingParams, check_token_ids

from .draws import M32, draw_top_k, draw_whole, uniforms
from .logprobs import token_logprobs


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
                            ("frequency", params.frequency_penalty), ("seed_lo", seed & M32),
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


def _apply(out: torch.Tensor, idx: list[int], fn, *tensors: torch.Tensor) -> torch.Tensor:
    """out with rows idx set to fn(*(t[idx] for t in tensors)); no gathers when idx is all rows."""
    if not idx:
        return out
    if len(idx) == out.shape[0]:  # idx lists are ascending and distinct: all rows, in order
        return fn(*tensors)
    i = torch.tensor(idx, device=out.device)
    out[i] = fn(*(t[i] for t in tensors))
    return out
