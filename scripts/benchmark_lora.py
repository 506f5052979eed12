#!/usr/bin/env python3
"""What LoRA adapters cost a decode step: 32 rows decoding with no adapter, all on one adapter,
and spread over four, measured side by side.

Writes --adapters random adapters of rank --rank on all seven projections (as PEFT saves them)
into a temporary folder, loads the model with them (LORA_MODULES), and times the model's own
decode step (no scheduler, no sampling) for --rows rows at --context cached positions under each
assignment of adapters to rows, in rounds that take every assignment in turn, so that a machine
busy with other work slows them alike. Reports the median step of each, and the step without
the LoRA hook at all (no adapters configured) as the base.

    .venv/bin/python scripts/benchmark_lora.py
    DTYPE=float32 .venv/bin/python scripts/benchmark_lora.py --rank 64
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from inference_api.config import Config  # noqa: E402
from inference_api.model.adapter_files import TARGETS, BaseShapes  # noqa: E402
from inference_api.model.files import prepare_model_folder, read_config  # noqa: E402
from inference_api.model.runner import ModelRunner  # noqa: E402


def write_adapter(folder: Path, base: BaseShapes, rank: int, model_id: str) -> None:
    """A random adapter on every projection of every layer, in PEFT's files."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(TARGETS),
        "base_model_name_or_path": model_id}))
    tensors = {}
    for layer in range(base.layers):
        for module, (linear, part) in TARGETS.items():
            key = f"base_model.model.model.layers.{layer}." \
                  f"{'mlp' if linear in ('gate_up', 'down') else 'self_attn'}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, base.in_features(linear)) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(base.parts(linear)[part], rank) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--context", type=int, default=300, help="positions already cached")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    config = Config.from_env(max_users=args.rows)
    folder = prepare_model_folder(config.model_path, config.model_cache_dir)
    base = BaseShapes.of_config(read_config(folder))
    with tempfile.TemporaryDirectory() as scratch:
        names = [f"tune{i}" for i in range(args.adapters)]
        for name in names:
            write_adapter(Path(scratch) / name, base, args.rank, config.model_id)
        modules = ",".join(f"{name}={Path(scratch) / name}" for name in names)
        runner = ModelRunner(Config.from_env(max_users=args.rows, lora_modules=modules))
    model, lora = runner.model, runner.model.lora
    print(f"device {runner.info['device']} dtype {runner.info['dtype']} threads "
          f"{torch.get_num_threads()} rows {args.rows} context {args.context} "
          f"adapters of rank {args.rank} on all 7 projections")
    rows = torch.arange(args.rows)
    tokens = torch.randint(0, 1000, (args.rows,))
    positions = torch.full((args.rows,), args.context)
    cases = {"no LoRA hook (no adapters configured)": None,
             "0 adapters active": [None] * args.rows,
             "1 adapter on all rows": [names[0]] * args.rows,
             f"1 adapter on {args.rows // 4} rows, the rest none":
                 [names[0] if r < args.rows // 4 else None for r in range(args.rows)],
             f"{args.adapters} adapters, {args.rows // args.adapters} rows each":
                 [names[r % args.adapters] for r in range(args.rows)]}
    times = {case: [] for case in cases}
    for round_ in range(args.rounds + 2):  # the first two rounds warm up, untimed
        for case, assignment in cases.items():
            model.lora = None if assignment is None else lora
            for row, name in enumerate(assignment or []):
                lora.assign(row, name)
            start = time.perf_counter()
            model.step(rows, tokens, positions, [])
            if round_ >= 2:
                times[case].append(time.perf_counter() - start)
    base_ms = statistics.median(times[next(iter(cases))]) * 1000
    for case, measured in times.items():
        ms = statistics.median(measured) * 1000
        print(f"{case:42s} step {ms:6.1f} ms ({ms / base_ms - 1:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
