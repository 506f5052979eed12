#!/usr/bin/env python3
"""Where a decode step's time goes: the whole step, its matrix products, attention and the rest.

Runs the model's own step (no scheduler, no sampling) for --rows rows decoding at each of
--contexts positions, and reports the median step time; then times the step's matrix products
(every layer's, with the step's shapes) and its decode attention (every layer's cache), each
without the rest, and (with --table) torch's profiler table of a few steps. What is neither a
matrix product nor attention (norms, rotary, residual adds, the Python of the step) is the step
less those two. --prefill times steps of prompt chunks alone (no row decoding), per token.

    .venv/bin/python scripts/profile_decode_step.py --contexts 50,300,1000
    .venv/bin/python scripts/profile_decode_step.py --contexts "" --prefill 1x512,4x128,16x32,1x2000
    .venv/bin/python scripts/profile_decode_step.py --contexts 300 --floor

--floor also measures the machine's limits (a large matrix product's rate in the model's dtype,
and the rate of reading memory) and prints the least time a step could take at them: its
products' arithmetic at the peak rate or its weights' bytes at the read rate, whichever is
longer, plus its keys' and values' bytes at the read rate.
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
from inference_api.model.forward import PrefillInput  # noqa: E402
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


def machine_limits(dtype: torch.dtype) -> tuple[float, float]:
    """The CPU's rate on a large square matrix product in `dtype` (GFLOP/s) and its rate of
    reading memory (GB/s, a sum over 1 GiB, far more than any cache): what a step cannot beat."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    flops = 2 * 2048 ** 3 / median_ms(lambda: a @ b, 7) * 1e3 / 1e9
    memory = torch.ones(1 << 28)  # float32, 1 GiB
    read = memory.nbytes / median_ms(memory.sum, 7) * 1e3 / 1e9
    return flops, read


def step_floor_ms(model, rows: int, context: int, gflops: float, read_gbs: float) -> float:
    """The least time a decode step of `rows` rows at `context` positions could take: each
    product at the peak rate or reading its weights, whichever is longer, then every cached key
    and value read once."""
    hidden = model.embed.shape[1]
    shapes = [(model.lm_head.out_features, hidden)] + len(model.layers) * [
        (model.layers[0].qkv.out_features, hidden), (hidden, model.q_size),
        (2 * model.ffn_size, hidden), (hidden, model.ffn_size)]
    params = sum(out * inputs for out, inputs in shapes)  # [out, in] each
    weight_bytes = params * model.embed.element_size()
    products = max(2 * rows * params / gflops, weight_bytes / read_gbs) / 1e6
    # One layer's cache of one row, whatever its layout (int8 codes with their scales too).
    cache_bytes = (model.k_cache[0][0].nbytes + model.v_cache[0][0].nbytes) / model.max_seq_len
    attention = rows * context * len(model.layers) * cache_bytes / read_gbs / 1e6
    return products + attention


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--contexts", default="50,300,1000", help="positions already cached")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--table", action="store_true", help="print torch's profiler table")
    parser.add_argument("--floor", action="store_true",
                        help="also measure the machine's peak and print each step's floor")
    parser.add_argument("--prefill", default="", metavar="ROWSxTOKENS,...",
                        help="also time prompt-only steps: so many rows' chunks of so many tokens")
    args = parser.parse_args()

    config = Config.from_env(max_users=args.rows)
    runner = ModelRunner(config)
    model = runner.model
    print(f"device {runner.info['device']} dtype {runner.info['dtype']} threads "
          f"{torch.get_num_threads()} rows {args.rows} attention "
          f"{type(model.attention).__name__} packed weights {model.layers[0].qkv.packed} "
          f"quantization {config.quantization} batch-invariant {config.batch_invariant}")
    rows = torch.arange(args.rows)
    tokens = torch.randint(0, 1000, (args.rows,))

    hidden = torch.randn(args.rows, model.embed.shape[1], dtype=model.dtype)
    heads_out = torch.randn(args.rows, model.q_size, dtype=model.dtype)
    ffn = torch.randn(args.rows, model.ffn_size, dtype=model.dtype)
    # Every layer's own weights, as a step reads them: timing one layer's products over and over
    # would find its weights in the CPU's caches, which a step never does.
    products = {"qkv": lambda: [layer.qkv(hidden) for layer in model.layers],
                "o": lambda: [layer.o(heads_out) for layer in model.layers],
                "gate_up": lambda: [layer.gate_up(hidden) for layer in model.layers],
                "down": lambda: [layer.down(ffn) for layer in model.layers],
                "lm_head": lambda: model.lm_head(hidden)}
    timed = {name: median_ms(run, args.repeats) for name, run in products.items()}
    all_products = median_ms(lambda: [run() for run in products.values()], args.repeats)
    print("matrix products of a step, ms: " + ", ".join(f"{n} {t:.2f}" for n, t in timed.items())
          + f"; all together {all_products:.1f}")

    shape = (args.rows, model.kv_heads, model.groups, model.head_dim)
    # int8 products have another peak, which this does not measure: no floor for them.
    limits = machine_limits(model.dtype) if args.floor else None
    if limits:
        print(f"machine: matrix products {limits[0]:.0f} GFLOP/s in {model.dtype}, "
              f"memory read {limits[1]:.1f} GB/s")
    for spec in filter(None, args.prefill.split(",")):
        chunks, length = (int(n) for n in spec.split("x"))
        prompts = [PrefillInput(row, torch.randint(0, 1000, (length,)), 0) for row in range(chunks)]
        empty = torch.empty(0, dtype=torch.long)
        step = median_ms(lambda: model.step(empty, empty, empty, prompts), args.repeats)
        print(f"prefill {chunks} x {length} tokens: step {step:7.1f} ms, "
              f"{step / (chunks * length):.3f} ms a prompt token")
    for context in (int(c) for c in filter(None, args.contexts.split(","))):
        positions = torch.full((args.rows,), context)
        step = median_ms(lambda: model.step(rows, tokens, positions, []), args.repeats)
        q = torch.randn(shape, dtype=model.dtype)
        k = torch.randn(args.rows, model.kv_heads, model.head_dim, dtype=model.dtype)
        v = torch.randn_like(k)
        out = torch.empty_like(q)
        groups = model.attention.group_rows(rows, positions, model.windows)
        attention = median_ms(lambda: [model.attention.run(
            index, q, k, v, model.k_cache[index], model.v_cache[index], rows, positions, groups,
            None, out) for index in range(len(model.layers))], args.repeats)
        rest = step - all_products - attention
        print(f"context {context:5d}: step {step:6.1f} ms = products {all_products:5.1f} "
              f"+ attention {attention:5.1f} + the rest {rest:5.1f}")
        if limits and config.quantization == "none":
            floor = step_floor_ms(model, args.rows, context, *limits)
            print(f"               floor {floor:6.1f} ms: the step takes {step / floor:.2f}x it")
        if args.table:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    model.step(rows, tokens, positions, [])
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
