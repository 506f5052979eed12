#!/usr/bin/env python3
"""Time one draw of the row sampler for a full batch of rows, per kind of sampling parameters.

The top-p rows are timed twice, alternated: with the nucleus looked for among the heaviest
candidates first (the default) and with the whole vocabulary sorted, to show what the first
saves. Logits are random but peaked like a language model's (scaled normal), on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from inference_api.sampling import draws
from inference_api.sampling.sampler import RowSampler
from inference_api.sampling_params import SamplingParams

KINDS = {
    "greedy": SamplingParams(temperature=0),
    "temperature 0.8": SamplingParams(temperature=0.8),
    "top_k 50": SamplingParams(temperature=0.8, top_k=50),
    "top_p 0.9": SamplingParams(temperature=0.8, top_p=0.9),
    "top_p 0.9, whole-vocabulary sort": SamplingParams(temperature=0.8, top_p=0.9),
}


def time_draws(sampler: RowSampler, logits: list[torch.Tensor], candidates: int) -> float:
    """Median milliseconds of one draw over the given logits."""
    draws.NUCLEUS_CANDIDATES = candidates
    rows = torch.arange(logits[0].shape[0])
    times = []
    for batch in logits:
        batch = batch.clone()  # the sampler consumes its logits
        start = time.perf_counter()
        sampler.sample(rows, batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=49152, help="the default model's vocabulary")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    logits = [torch.randn(args.rows, args.vocab) * 3 for _ in range(args.draws)]
    default_candidates = draws.NUCLEUS_CANDIDATES
    results = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):  # kinds alternate, so a slow spell hits them all alike
        for kind, params in KINDS.items():
            sampler = RowSampler(args.rows, args.vocab, "cpu", (0,))
            for row in range(args.rows):
                sampler.add(row, params, [])
            candidates = args.vocab if "whole-vocabulary" in kind else default_candidates
            results[kind].append(time_draws(sampler, logits, candidates))
    print(f"one draw for {args.rows} rows, vocabulary {args.vocab}, "
          f"{torch.get_num_threads()} threads (median of {args.repeats} x {args.draws} draws)")
    for kind, values in results.items():
        print(f"  {kind:34s} {statistics.median(values):7.2f} ms")


if __name__ == "__main__":
    main()
