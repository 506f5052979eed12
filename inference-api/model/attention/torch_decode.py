"""Decode attention in torch ops: one new query per row against its cached keys and values.

The engine uses it where the CPU kernel (native_attention.py) cannot run: on GPUs, in float16,
without a C++ compiler, or when DECODE_ATTENTION=torch. Rows are split into groups of similar
length, and each group's keys and values are kept in a contiguous buffer that grows by one
position a step. A CPU batched matmul only streams contiguous batches (a slice of the cache is
copied first), so gathering the rows anew every step would cost as much as the attention
itself; the buffer is gathered only when its group changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .ops import attend, position_mask

# Rows are read up to a length rounded up to this many positions (the mask hides the rest).
# Every new matrix shape makes the CPU matmul library generate a kernel first (~0.5 ms each,
# measured, plus page faults for its code), and a group's buffer is gathered again whenever its
# length changes: without rounding, both would happen at every step.
KV_BUCKET = 32

# A group costs a fixed number of kernel launches per layer; in cache reads that is about as
# much as this many (row, position) pairs, measured on CPU. Splitting rows into groups pays off
# when it saves more padded reads than that.
GROUP_OVERHEAD = 256

# Forming a group copies its rows into a new buffer, a burst that lands on one step. A better
# grouping saves reads at every step until its groups next change (at the latest when their
# length crosses a bucket edge), so the last step's groups are kept, and only the other rows
# grouped anew, unless the best grouping saves in this many steps' reads more than the extra
# positions it copies now.
REGROUP_HORIZON = 8


def kv_extent(length: int, limit: int, bucket: int = KV_BUCKET) -> int:
    """Cache positions read for a query that sees `length` positions: rounded up to `bucket`."""
    return min(-(-length // bucket) * bucket, limit)


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
class GroupBuffer:
    """A group's cache rows [:kv_len], contiguous, one tensor pair per layer."""

    rows: list[int]  # cache rows, in buffer order
    kv_len: int
    k: list  # per layer [g, kv, dim, kv_len], None until gathered
    v: list  # per layer [g, kv, kv_len, dim]
    next_positions: list[int] = field(default_factory=list)  # each row's next token, if unchanged


@dataclass
class DecodeGroup:
    """The part of one step's decode rows attended together."""

    index: torch.Tensor  # [g] where the buffer's rows sit in the step's decode rows as given
    span: slice  # where they sit once the step's decode tokens are put in group order
    rows: torch.Tensor  # [g] their cache rows, in buffer order
    positions: torch.Tensor  # [g] position of each row's new token
    slots: torch.Tensor  # [g] 0..g-1: each row's place in the buffer
    buffer: GroupBuffer
    masks: dict  # sliding window -> additive mask [g, 1, 1, kv_len]


class DecodeAttention:
    """Groups a step's decoding rows and runs their attention; owns the group buffers."""

    softcap: float | None = None  # the scores' soft cap (Gemma 2), set by the model

    def __init__(self, layers: int, max_seq_len: int, kv_heads: int, head_dim: int, dtype,
                 bucket: int = KV_BUCKET, overhead: int = GROUP_OVERHEAD,
                 keep_buffers: bool = True):
        self.layers, self.max_seq_len, self.dtype = layers, max_seq_len, dtype
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.bucket, self.overhead = bucket, overhead
        # Kept buffers hold a second copy of the cache positions being read, for all layers.
        # Without them each layer gathers its groups afresh and frees them at once, so only one
        # layer's copy exists at a time: the choice for accelerators, whose memory is scarce.
        self.keep_buffers = keep_buffers
        # A buffer lives only while all its rows decode at every step: a row that takes a new
        # prompt prefills first, in steps where it is not decoding, which drops its buffers.
        self.buffers: dict[frozenset, GroupBuffer] = {}

    def reset(self) -> None:
        """Forget every buffer (after a failed step left them half updated)."""
        self.buffers.clear()

    def allocate_cache(self, layers: int, rows: int, seq: int, device) -> tuple:
        """Zeroed K [layers, rows, kv, dim, seq] and V [layers, rows, kv, seq, dim].

        Keys are transposed so that q @ K multiplies by a plain row-major [dim, L] matrix:
        measured ~1.5x faster on CPU in bfloat16 than the transposed [L, dim] one. Zero-filled so
        that never-written positions are finite (masked, but 0 * NaN = NaN).
        """
        kv, dim = self.kv_heads, self.head_dim
        return (torch.zeros((layers, rows, kv, dim, seq), dtype=self.dtype, device=device),
                torch.zeros((layers, rows, kv, seq, dim), dtype=self.dtype, device=device))

    def write_prompt_keys(self, k_cache: torch.Tensor, row: int, start: int,
                          k: torch.Tensor) -> None:
        """Store a prompt chunk's keys k [c, kv, dim] at positions start.. of one layer's row."""
        k_cache[row, :, :, start:start + k.shape[0]] = k.permute(1, 2, 0)

    def write_prompt_values(self, v_cache: torch.Tensor, row: int, start: int,
                            v: torch.Tensor) -> None:
        """Store a prompt chunk's values v [c, kv, dim] at positions start.. of one layer's row."""
        v_cache[row, :, start:start + v.shape[0]] = v.transpose(0, 1)

    def copy_positions(self, k_cache: torch.Tensor, v_cache: torch.Tensor, source: int,
                       target: int, length: int) -> None:
        """Copy positions [0, length) of row source to row target in every layer's cache."""
        k_cache[:, target, ..., :length] = k_cache[:, source, ..., :length]
        v_cache[:, target, :, :length] = v_cache[:, source, :, :length]

    def prompt_keys(self, k_cache: torch.Tensor, row: int, length: int) -> torch.Tensor:
        """One layer's keys of a row, positions [:length], as [kv, dim, length] (a view)."""
        return k_cache[row, ..., :length]

    def prompt_values(self, v_cache: torch.Tensor, row: int, length: int) -> torch.Tensor:
        """One layer's values of a row, positions [:length], as [kv, length, dim] (a view)."""
        return v_cache[row, :, :length]

    def group_rows(self, rows: torch.Tensor, positions: torch.Tensor,
                   windows: set) -> list[DecodeGroup]:
        """Group the step's decoding rows [D] at positions [D]; reuse buffers still up to date.

        The caller puts the step's decode tokens in group order (the groups' `index` lists one
        after the other), so that each group's queries, keys and outputs are the slice `span`.
        """
        row_list, pos_list = rows.tolist(), positions.tolist()
        slot = {row: i for i, row in enumerate(row_list)}
        lengths = [kv_extent(p + 1, self.max_seq_len, self.bucket) for p in pos_list]
        reusable = {key: buffer for key, buffer in self.buffers.items()
                    if self._current(buffer, slot, pos_list)
                    and max(lengths[slot[r]] for r in buffer.rows) == buffer.kv_len}
        members = self._choose_groups(row_list, lengths, slot, reusable)
        groups, kept, start = [], {}, 0
        for indices in members:
            key = frozenset(row_list[i] for i in indices)
            buffer = reusable.get(key)
            if buffer is None:
                kv_len = max(lengths[i] for i in indices)
                buffer = GroupBuffer(sorted(key), kv_len, [None] * self.layers,
                                     [None] * self.layers)
            buffer.next_positions = [pos_list[slot[r]] + 1 for r in buffer.rows]
            kept[key] = buffer
            index = torch.tensor([slot[r] for r in buffer.rows], device=rows.device)
            group_positions = positions[index]
            masks = {w: position_mask(group_positions, buffer.kv_len, w, self.dtype)[:, None, None]
                     for w in windows}
            span = slice(start, start + len(indices))
            start = span.stop
            slots = torch.arange(len(indices), device=rows.device)
            groups.append(DecodeGroup(index, span, rows[index], group_positions, slots, buffer,
                                      masks))
        self.buffers = kept if self.keep_buffers else {}  # groups gone: their buffers go
        return groups

    def _choose_groups(self, row_list, lengths, slot, reusable) -> list[list[int]]:
        """The best grouping of the step's rows, unless keeping the reusable groups and grouping
        only the other rows reads so little more that the gathers it spares outweigh it."""
        best = length_groups(lengths, self.overhead)
        if not reusable:
            return best
        kept = [[slot[r] for r in buffer.rows] for buffer in reusable.values()]
        taken = {i for indices in kept for i in indices}
        loose = [i for i in range(len(row_list)) if i not in taken]
        sticky = kept + [[loose[j] for j in g] for g in length_groups([lengths[i] for i in loose],
                                                                      self.overhead)]

        def reads(groups):  # cache positions read a step, plus the cost of each group
            return sum(len(g) * max(lengths[i] for i in g) + self.overhead for g in groups)

        def gathered(groups):  # positions copied to form the groups not kept from last step
            return sum(len(g) * max(lengths[i] for i in g) for g in groups
                       if frozenset(row_list[i] for i in g) not in reusable)

        extra_reads = reads(sticky) - reads(best)
        return sticky if extra_reads * REGROUP_HORIZON <= gathered(best) - gathered(sticky) \
            else best

    def _current(self, buffer: GroupBuffer, slot: dict, pos_list: list[int]) -> bool:
        """True when every row of the buffer decodes in this step and the buffer holds every
        position before each row's new token, and no more."""
        return all(r in slot and pos_list[slot[r]] == p
                   for r, p in zip(buffer.rows, buffer.next_positions))

    def run(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            k_cache: torch.Tensor, v_cache: torch.Tensor, rows: torch.Tensor,
            positions: torch.Tensor, groups: list[DecodeGroup], window: int | None,
            out: torch.Tensor) -> None:
        """Write the new k/v [D, kv, dim] at each row's position of k_cache [rows, kv, dim, seq]
        and v_cache [rows, kv, seq, dim], then attend q [D, kv, groups, dim] into out
        (contiguous, like q); rows, positions, q, k and v all in group order."""
        k, v = self._write_tokens(k_cache, v_cache, rows, positions, k, v)
        for group in groups:
            buffer, span = group.buffer, group.span
            if buffer.k[layer] is None:  # a new or changed group: gather its rows once
                buffer.k[layer], buffer.v[layer] = self._gather(k_cache, v_cache, group.rows,
                                                                buffer.kv_len)
            else:  # the same group as last step: add the new position only
                at = (group.slots, group.positions)
                buffer.k[layer].permute(0, 3, 1, 2).index_put_(at, k[span])
                buffer.v[layer].transpose(1, 2).index_put_(at, v[span])
            attend(q[span], buffer.k[layer], buffer.v[layer], group.masks[window], out[span],
                   self.softcap)
            if not self.keep_buffers:
                buffer.k[layer] = buffer.v[layer] = None

    def _write_tokens(self, k_cache, v_cache, rows, positions, k, v) -> tuple:
        """Write the new k/v [D, kv, dim] at each row's position; give them back as cached."""
        k_cache.permute(0, 3, 1, 2).index_put_((rows, positions), k)  # [rows, seq, kv, dim]
        v_cache.transpose(1, 2).index_put_((rows, positions), v)
        return k, v

    def _gather(self, k_cache, v_cache, rows: torch.Tensor, length: int) -> tuple:
        """Rows' keys [g, kv, dim, length] and values [g, kv, length, dim], contiguous copies."""
        k_rows = k_cache.flatten(1, 2)[..., :length].index_select(0, rows)
        return (k_rows.view(rows.numel(), self.kv_heads, self.head_dim, length),
                v_cache[:, :, :length].index_select(0, rows))
