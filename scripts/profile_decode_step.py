#!/usr/bin/env python3
"""Where a decode step's time goes: the whole step, its matrix products, attention and the rest.

Runs the model's own step (no scheduler, no sampling) for --rows rows decoding at each of
--contexts positions, and reports the median step time; then times each layer's matrix products
and lm_head alone with the step's shapes, the decode attention of one layer alone, and (with
--table) torch's profiler table of a few steps. What is neither a matrix product nor attention
(norms, rotary, residual adds, the Python of the step) is the step less those two.

    .venv/bin/python scripts/profile_decode_step.py --contexts 50,300,1000
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from inference_api.config import Config  # noqa: E402
from inference_api.model.runner import ModelRunner  # noqa: E402


def median_ms(run, repeats: int, warmup: int = 3) -> float:
    """Median wall time of run() in milliseconds, after a few untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--contexts", default="50,300,1000", help="positions already cached")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--table", action="store_true", help="print torch's profiler table")
    args = parser.parse_args()

    config = Config.from_env(max_users=args.rows)
    runner = ModelRunner(config)
    model = runner.model
    print(f"device {runner.info['device']} dtype {runner.info['dtype']} threads "
          f"{torch.get_num_threads()} rows {args.rows} attention "
          f"{type(model.attention).__name__} packed weights {model.layers[0].qkv.packed}")
    rows = torch.arange(args.rows)
    tokens = torch.randint(0, 1000, (args.rows,))

    layer = model.layers[0]
    hidden = torch.randn(args.rows, model.embed.shape[1], dtype=model.dtype)
    heads_out = torch.randn(args.rows, model.q_size, dtype=model.dtype)
    ffn = torch.randn(args.rows, model.ffn_size, dtype=model.dtype)
    per_layer = {"qkv": lambda: layer.qkv(hidden), "o": lambda: layer.o(heads_out),
                 "gate_up": lambda: layer.gate_up(hidden), "down": lambda: layer.down(ffn)}
    products = {name: median_ms(run, args.repeats) for name, run in per_layer.items()}
    head = median_ms(lambda: model.lm_head(hidden), args.repeats)
    all_products = sum(products.values()) * len(model.layers) + head
    print("matrix products alone, ms: " + ", ".join(f"{n} {t:.2f}" for n, t in products.items())
          + f" (a layer; {len(model.layers)} layers), lm_head {head:.1f}; a step's "
          f"{all_products:.1f}")

    shape = (args.rows, model.kv_heads, model.groups, model.head_dim)
    for context in (int(c) for c in args.contexts.split(",")):
        positions = torch.full((args.rows,), context)
        step = median_ms(lambda: model.step(rows, tokens, positions, []), args.repeats)
        q = torch.randn(shape, dtype=model.dtype)
        k = torch.randn(args.rows, model.kv_heads, model.head_dim, dtype=model.dtype)
        v = torch.randn_like(k)
        out = torch.empty_like(q)
        groups = model.attention.group_rows(rows, positions, model.windows)
        attention = median_ms(lambda: model.attention.run(
            0, q, k, v, model.k_cache[0], model.v_cache[0], rows, positions, groups, None, out),
            args.repeats) * len(model.layers)
        rest = step - all_products - attention
        print(f"context {context:5d}: step {step:6.1f} ms = products {all_products:5.1f} "
              f"+ attention {attention:5.1f} + the rest {rest:5.1f}")
        if args.table:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    model.step(rows, tokens, positions, [])
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
