#!/usr/bin/env python3
"""Benchmark the backend engine in one process against transformers generate(), side by side.

32 concurrent requests from the fixed prompt set, staggered arrivals, 128 new tokens each.
The engine and transformers generate() on one padded static batch run alternately, --repeats
times, and the medians are compared. Before them, --warmup untimed runs of each: the first run
after start builds matrix kernels for shapes not seen before and grows the heap, as a server
does in its first minutes. Each timed run follows a pause of --settle-s: a run that frees
gigabytes, as the static batch does, slows whatever runs in the next seconds on this kind of
virtual machine. Then (with --http) the same load over HTTP through a real server, and
generate() one request at a time. Prints aggregate output tokens/s, time to first token,
inter-token latency and step time percentiles, and the ratios.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import load_client  # noqa: E402
import requests  # noqa: E402
from prompt_set import benchmark_prompts  # noqa: E402
from stats import percentile  # noqa: E402

from inference_api.config import Config  # noqa: E402
from inference_api.engine.core import Engine  # noqa: E402
from inference_api.model.runner import ModelRunner  # noqa: E402
from inference_api.sampling_params import SamplingParams  # noqa: E402
from inference_api.process_messages import Submit  # noqa: E402
from inference_api.engine.step_budget import step_budget  # noqa: E402
from inference_api.engine.text_state import TextMaker  # noqa: E402


def run_engine(runner, config, prompt_ids, new_tokens, stagger_s):
    """Serve every prompt through the engine with staggered arrivals; returns timings."""
    texts = TextMaker.for_tokenizer(runner.tokenizer, runner.eos_ids)
    engine = Engine(runner, texts, config.max_users,
                    step_budget(config.itl_target_ms, config.prefill_chunk), runner.max_seq_len,
                    prefix_caching=config.prefix_caching)
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    arrival = {f"r{i}": start + i * stagger_s for i in range(len(prompt_ids))}
    pending = list(enumerate(prompt_ids))
    first, last, gaps, done = {}, {}, [], set()
    step_times = []
    while len(done) < len(prompt_ids):
        now = time.perf_counter()
        while pending and arrival[f"r{pending[0][0]}"] <= now:
            i, ids = pending.pop(0)
            engine.add(Submit(f"r{i}", ids, params))
        if not engine.has_work():
            time.sleep(max(0.0, arrival[f"r{pending[0][0]}"] - now))
            continue
        t0 = time.perf_counter()
        outputs = engine.step()
        t1 = time.perf_counter()
        step_times.append(t1 - t0)
        for out in outputs:
            sid = out.session_id
            if sid not in first:
                first[sid] = t1
            elif out.num_tokens:
                gaps += [(t1 - last[sid]) / out.num_tokens] * out.num_tokens
            last[sid] = t1
            if out.finish_reason:
                done.add(sid)
    elapsed = time.perf_counter() - start
    ttft = [first[s] - arrival[s] for s in first]
    return {"tokens_per_s": len(prompt_ids) * new_tokens / elapsed, "elapsed": elapsed,
            "ttft": ttft, "itl": gaps, "steps": step_times}


def run_http(config, prompts, new_tokens, stagger_ms, warmup):
    """The same load through a real gunicorn server on a free port; the load client's figures."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, SERVICE_PORT=str(port), MAX_USERS=str(config.max_users))
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--config",
                               "gunicorn.conf.py"], cwd=repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        args = load_client.parse_args(["--url", url, "--model", config.model_id,
                                       "--max-tokens", str(new_tokens),
                                       "--stagger-ms", str(stagger_ms), "--quiet"])
        load_client.run_load(args, prompts[:2])
        for _ in range(warmup):
            load_client.run_load(args, prompts)
        return load_client.summary(*load_client.run_load(args, prompts))
    finally:
        server.terminate()
        server.wait(60)


def hf_generate_one_at_a_time(model, prompt_ids, new_tokens):
    """transformers generate() for each prompt alone; returns output tokens/s."""
    tokens, start = 0, time.perf_counter()
    for ids in prompt_ids:
        inputs = torch.tensor([ids])
        model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        tokens += new_tokens
    return tokens / (time.perf_counter() - start)


def hf_generate_static_batch(model, prompt_ids, new_tokens):
    """transformers generate() on all prompts as one left-padded batch; returns output tokens/s."""
    width = max(len(ids) for ids in prompt_ids)
    inputs = torch.zeros(len(prompt_ids), width, dtype=torch.long)
    mask = torch.zeros_like(inputs)
    for row, ids in enumerate(prompt_ids):
        inputs[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    start = time.perf_counter()
    model.generate(inputs, attention_mask=mask, max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return len(prompt_ids) * new_tokens / (time.perf_counter() - start)


def print_latencies(result) -> None:
    """TTFT, inter-token and step time percentiles of engine runs (pooled over repeats)."""
    for name in ("ttft", "itl", "steps"):
        values = result[name]
        print(f"  {name:5s} p50 {percentile(values, 50) * 1000:7.1f} ms   "
              f"p99 {percentile(values, 99) * 1000:7.1f} ms")


def compare_variants(runner, variants, prompt_ids, args) -> None:
    """Engine runs of each variant (label -> (config, decode attention choice)), alternated
    --repeats times; medians and pooled percentiles per variant."""
    results = {label: {"tokens_per_s": [], "ttft": [], "itl": []} for label in variants}
    for repeat in range(args.repeats):
        for label, (config, attention) in variants.items():
            runner.model.use_decode_attention(attention)
            time.sleep(args.settle_s)
            result = run_engine(runner, config, prompt_ids, args.new_tokens, args.stagger_ms / 1000)
            for name, values in results[label].items():
                values += [result[name]] if name == "tokens_per_s" else result[name]
            p99_ms = percentile(result["itl"], 99) * 1000
            print(f"run {repeat + 1}: {label}: {result['tokens_per_s']:6.1f} "
                  f"output tokens/s, inter-token p99 {p99_ms:5.1f} ms", flush=True)
    print("\n| variant | tokens/s (median) | TTFT p50 | inter-token p50 | inter-token p99 |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {statistics.median(r['tokens_per_s']):.1f} | "
              f"{percentile(r['ttft'], 50) * 1000:.0f} ms | {percentile(r['itl'], 50) * 1000:.1f} ms"
              f" | {percentile(r['itl'], 99) * 1000:.1f} ms |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--stagger-ms", type=float, default=100.0, help="gap between arrivals")
    parser.add_argument("--repeats", type=int, default=3,
                        help="engine and static-batch runs, alternated; medians are reported")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of the whole load before the timed ones (0: cold start)")
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="pause before each timed run, for the machine to settle")
    parser.add_argument("--single-requests", type=int, default=8,
                        help="how many prompts to time for generate() one at a time")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--prefill-chunks", metavar="N,N,...",
                        help="only compare the engine at these PREFILL_CHUNK values")
    parser.add_argument("--decode-attentions", metavar="NAME,NAME",
                        help="only compare the engine with these DECODE_ATTENTION values")
    parser.add_argument("--http", action="store_true",
                        help="also run the same load over HTTP through a real server")
    args = parser.parse_args()

    config = Config.from_env()
    runner = ModelRunner(config)
    encode = runner.tokenizer.encode
    prompts = benchmark_prompts(args.requests)
    prompt_ids = [encode(p).ids for p in prompts]
    lengths = sorted(len(ids) for ids in prompt_ids)
    print(f"model {runner.info['folder']}\ndevice {runner.info['device']} dtype "
          f"{runner.info['dtype']} threads {torch.get_num_threads()} rows {config.max_users} "
          f"prefill chunk {config.prefill_chunk} decode attention "
          f"{type(runner.model.attention).__name__}")
    print(f"{len(prompt_ids)} requests, prompt tokens min/median/max "
          f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}, {args.new_tokens} new tokens "
          f"each, one arrival every {args.stagger_ms:.0f} ms")
    if args.prefill_chunks or args.decode_attentions:
        if args.prefill_chunks:
            variants = {f"PREFILL_CHUNK {c}": (dataclasses.replace(config, prefill_chunk=int(c)),
                                               config.decode_attention)
                        for c in args.prefill_chunks.split(",")}
        else:
            variants = {f"DECODE_ATTENTION {a}": (config, a)
                        for a in args.decode_attentions.split(",")}
        for attention in dict.fromkeys(a for _, a in variants.values()):  # each choice once
            runner.model.use_decode_attention(attention)
            run_engine(runner, config, prompt_ids[:2], 4, 0.0)
            for _ in range(args.warmup):
                run_engine(runner, config, prompt_ids, args.new_tokens, args.stagger_ms / 1000)
        compare_variants(runner, variants, prompt_ids, args)
        return 0
    hf_model = None
    if not args.skip_transformers:
        from transformers import AutoModelForCausalLM

        from inference_api.model.files import prepare_model_folder
        from inference_api.model.loading import resolve_dtype

        folder = prepare_model_folder(config.model_path, config.model_cache_dir)
        dtype = resolve_dtype(config.dtype, "cpu")
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    run_engine(runner, config, prompt_ids[:2], 4, 0.0)
    for _ in range(args.warmup):
        cold = run_engine(runner, config, prompt_ids, args.new_tokens, args.stagger_ms / 1000)
        line = (f"warm-up (untimed): engine {cold['tokens_per_s']:6.1f} output tokens/s, "
                f"inter-token p99 {percentile(cold['itl'], 99) * 1000:.1f} ms")
        if hf_model is not None:
            line += (f", transformers static batch "
                     f"{hf_generate_static_batch(hf_model, prompt_ids, args.new_tokens):5.1f}")
        print(line, flush=True)
    # The machine's speed drifts (shared cores): engine and static batch alternate, each pair
    # measured back to back, and the medians are compared.
    pooled, engine_rates, static_rates = {"ttft": [], "itl": [], "steps": []}, [], []
    for repeat in range(args.repeats):
        time.sleep(args.settle_s)
        result = run_engine(runner, config, prompt_ids, args.new_tokens, args.stagger_ms / 1000)
        engine_rates.append(result["tokens_per_s"])
        for name in pooled:
            pooled[name] += result[name]
        line = f"run {repeat + 1}: engine {result['tokens_per_s']:6.1f} output tokens/s"
        if hf_model is not None:
            time.sleep(args.settle_s)
            static_rates.append(hf_generate_static_batch(hf_model, prompt_ids, args.new_tokens))
            line += (f", transformers static batch {static_rates[-1]:5.1f} "
                     f"(ratio {engine_rates[-1] / static_rates[-1]:.2f}x)")
        print(line, flush=True)
    engine_rate = statistics.median(engine_rates)
    print(f"\nengine: {engine_rate:.1f} output tokens/s (median of {args.repeats} runs)")
    print_latencies(pooled)
    del runner
    gc.collect()
    if args.http:
        http = run_http(config, prompts, args.new_tokens, args.stagger_ms, args.warmup)
        print(f"\nHTTP (gunicorn server, load client, 32 concurrent streams): "
              f"{http['tokens_per_s']:.1f} output tokens/s, {len(http['errors'])} errors")
        print(f"  ttft  p50 {http['ttft_p50'] * 1000:7.1f} ms   p99 {http['ttft_p99'] * 1000:7.1f} ms")
        print(f"  itl   p50 {http['itl_p50'] * 1000:7.1f} ms   p99 {http['itl_p99'] * 1000:7.1f} ms")
        print(f"ratio HTTP / in-process median: {http['tokens_per_s'] / engine_rate:.2f}")
    if hf_model is None:
        return 0
    single = hf_generate_one_at_a_time(hf_model, prompt_ids[:args.single_requests],
                                       args.new_tokens)
    static = statistics.median(static_rates)
    print(f"\ntransformers generate(), one request at a time ({args.single_requests} requests): "
          f"{single:.1f} output tokens/s")
    print(f"transformers generate(), one padded static batch of {len(prompt_ids)}: "
          f"{static:.1f} output tokens/s (median of {args.repeats} runs)")
    print(f"\nratio engine / one-at-a-time: {engine_rate / single:.2f}x")
    print(f"ratio engine / static batch:  {engine_rate / static:.2f}x (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
