#!/usr/bin/env python3
"""Time the default model's matrix products with reordered and with plain bfloat16 weights.

Both variants are built from the same loaded weights and run alternately, all layers'
projections plus lm_head per pass, for several token counts; medians are printed. The outputs
are compared too: reordering must not change a single value.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from inference_api.config import Config  # noqa: E402
from inference_api.model.linear import can_pack  # noqa: E402
from inference_api.model.forward import DecoderModel  # noqa: E402
from inference_api.model.files import prepare_model_folder  # noqa: E402
from inference_api.model.loading import load_model  # noqa: E402


def all_products(model: DecoderModel, x: torch.Tensor, h: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's four products and lm_head; x [T, hidden], h [T, ffn]."""
    outs = []
    for layer in model.layers:
        outs += [layer.qkv(x), layer.o(x), layer.gate_up(x), layer.down(h)]
    return outs + [model.lm_head(x)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,32,64,100", help="token counts to time")
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    config = Config.from_env()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cpu, dtype = torch.device("cpu"), torch.bfloat16
    if not can_pack(cpu, dtype):
        raise SystemExit("this CPU does not do bfloat16 matrix math: weights are never reordered")
    hf_model = load_model(prepare_model_folder(config.model_path, config.model_cache_dir), cpu,
                          dtype)
    variants = {"reordered": DecoderModel(hf_model, 1, 64, pack_weights=True),
                "plain": DecoderModel(hf_model, 1, 64, pack_weights=False)}
    hidden = variants["plain"].embed.shape[1]
    ffn = variants["plain"].ffn_size
    print(f"{len(variants['plain'].layers)} layers, hidden {hidden}, ffn {ffn}, "
          f"threads {torch.get_num_threads()}")
    with torch.inference_mode():
        for tokens in [int(t) for t in args.tokens.split(",")]:
            x = torch.randn(tokens, hidden, dtype=dtype)
            h = torch.randn(tokens, ffn, dtype=dtype)
            same = all(torch.equal(a, b) for a, b in zip(all_products(variants["reordered"], x, h),
                                                        all_products(variants["plain"], x, h)))
            times = {name: [] for name in variants}
            for repeat in range(args.repeats + 2):  # the first two passes only warm up
                order = list(variants.items())
                for name, model in order if repeat % 2 else order[::-1]:
                    start = time.perf_counter()
                    all_products(model, x, h)
                    if repeat >= 2:
                        times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
            print(f"{tokens:4d} tokens: reordered {medians['reordered']:6.2f} ms, plain "
                  f"{medians['plain']:6.2f} ms, identical outputs: {same}")


if __name__ == "__main__":
    main()
