#!/usr/bin/env python3
"""Load client: N concurrent streaming requests against a running server, with latency figures.

Sends the fixed benchmark prompt set to POST /inference/<model> (or through the proxy with
--token), reads each chunked stream as it arrives, and prints per-request and aggregate output
tokens/s, time to first token and inter-token latency percentiles, and errors.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from prompt_set import benchmark_prompts
from stats import percentile


@dataclass
class Result:
    """What one streamed request measured."""

    index: int
    status: int = 0
    error: str = ""
    tokens: int = 0
    ttft: float = float("nan")
    total: float = float("nan")
    gaps: list[float] = field(default_factory=list)  # seconds between chunks


def stream_one(args, index: int, prompt: str, start_at: float, session: requests.Session) -> Result:
    """Send one request at its arrival time and time its chunks."""
    result = Result(index)
    time.sleep(max(0.0, start_at - time.perf_counter()))
    body = {"text": prompt, "max_tokens": args.max_tokens, "temperature": args.temperature,
            "ignore_eos": True}
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    sent = time.perf_counter()
    try:
        with session.post(f"{args.url}/inference/{args.model}", json=body, headers=headers,
                          stream=True, timeout=args.timeout) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = response.text[:200]
                return result
            last = None
            chunks = 0
            for chunk in response.iter_content(chunk_size=None):
                if not chunk:
                    continue
                now = time.perf_counter()
                chunks += 1
                if last is None:
                    result.ttft = now - sent
                else:
                    result.gaps.append(now - last)
                last = now
            result.total = time.perf_counter() - sent
            # With ignore_eos and no stop a complete stream holds exactly max_tokens tokens.
            # A chunk may carry several tokens when the client lags; its gap then counts once,
            # which overstates inter-token latency rather than hiding it.
            result.tokens = args.max_tokens if chunks else 0
    except requests.RequestException as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return result


def run_load(args, prompts: list[str]) -> tuple[list[Result], float]:
    """Send every prompt, `args.concurrency` at a time, arrivals staggered; (results, seconds)."""
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    start = time.perf_counter() + 0.2
    with ThreadPoolExecutor(args.concurrency) as pool:
        futures = [pool.submit(lambda i=i: stream_one(args, i, prompts[i],
                                                      start + i * args.stagger_ms / 1000,
                                                      session()))
                   for i in range(len(prompts))]
        results = [f.result() for f in futures]
    return results, time.perf_counter() - start


def summary(results: list[Result], elapsed: float) -> dict:
    """Aggregate output tokens/s, time to first token and inter-token latency percentiles."""
    ok = [r for r in results if not r.error]
    ttft = [r.ttft for r in ok]
    gaps = [g for r in ok for g in r.gaps]
    return {"tokens_per_s": sum(r.tokens for r in ok) / elapsed, "elapsed": elapsed,
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "itl_p50": percentile(gaps, 50), "itl_p99": percentile(gaps, 99),
            "errors": [r for r in results if r.error]}


def parse_args(argv=None):
    """The command line of the load client."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7000")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--token", default="", help="a JWT, to go through the proxy")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--stagger-ms", type=float, default=100.0, help="gap between arrivals")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--quiet", action="store_true", help="no per-request lines")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    results, elapsed = run_load(args, benchmark_prompts(args.requests))
    if not args.quiet:
        print(f"{'req':>4} {'status':>6} {'tokens':>6} {'tok/s':>7} {'ttft ms':>8} {'total s':>8}")
        for r in results:
            rate = r.tokens / r.total if r.tokens and r.total else 0.0
            print(f"{r.index:4d} {r.status:6d} {r.tokens:6d} {rate:7.1f} {r.ttft * 1000:8.1f} "
                  f"{r.total:8.2f} {r.error}")
    figures = summary(results, elapsed)
    print(f"\n{len(results)} requests, {args.concurrency} concurrent, {args.max_tokens} new tokens "
          f"each, one arrival every {args.stagger_ms:.0f} ms, against {args.url}")
    print(f"aggregate: {figures['tokens_per_s']:.1f} output tokens/s ({elapsed:.1f} s for all)")
    print(f"  ttft  p50 {figures['ttft_p50'] * 1000:7.1f} ms   p99 {figures['ttft_p99'] * 1000:7.1f} ms")
    print(f"  itl   p50 {figures['itl_p50'] * 1000:7.1f} ms   p99 {figures['itl_p99'] * 1000:7.1f} ms")
    print(f"errors: {len(figures['errors'])}")
    for r in figures["errors"][:10]:
        print(f"  request {r.index}: status {r.status} {r.error}")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
