#!/usr/bin/env python3
"""Benchmark OpenAI-compatible servers side by side: the same prompts, streamed, alternated.

Each target (`--target name=URL[,token]`: our proxy, vLLM, llama.cpp, ...) gets the same prompts
through POST /v1/completions with stream, max_tokens 128, temperature 0 and ignore_eos, at most
the workload's concurrency in flight. The targets run alternately (A, B, A, B, ...) for
--rounds rounds after an untimed warm-up; each run prints aggregate output tokens/s, time to
first token and inter-token latency percentiles and errors, then the medians per target across
rounds and their ratios to the first target. Output tokens come from the usage of the last
chunk (stream_options.include_usage) where the server sends it, else one per text chunk.
Loopback targets only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
import requests

from serving_prompts import WORKLOADS, workload_prompts
from stats import percentile

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Target:
    """A server to measure: its name, base URL, bearer token and served model id."""
    name: str
    url: str
    token: str = ""
    model: str = ""


@dataclass
class Result:
    """What one streamed request measured."""
    error: str = ""
    tokens: int = 0
    prompt_tokens: int = 0
    ttft: float = float("nan")
    gaps: list[float] = field(default_factory=list)


def parse_target(spec: str, secret: str) -> Target:
    """`name=URL[,token]`; the token `jwt` means one signed with the JWT secret."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"error: --target {spec!r} is not name=URL[,token]")
    url, _, token = rest.partition(",")
    if urlsplit(url).hostname not in LOOPBACK:
        raise SystemExit(f"error: --target {name}: only loopback hosts are allowed, not {url}")
    if token == "jwt":
        if not secret:
            raise SystemExit(f"error: --target {name}: token 'jwt' needs --jwt-secret")
        token = jwt.encode({"team_id": "benchmark", "token_id": "benchmark-serving"}, secret,
                           algorithm="HS256")
    return Target(name, url.rstrip("/"), token)


def headers(target: Target) -> dict:
    """The request headers for a target."""
    return {"Authorization": f"Bearer {target.token}"} if target.token else {}


def served_model(target: Target, timeout: float) -> str:
    """The first model id listed by GET /v1/models."""
    response = requests.get(f"{target.url}/v1/models", headers=headers(target), timeout=timeout)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def sse_events(response, deadline: float):
    """Yield (arrival time, data) for each `data:` line of an event stream."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError("the request took longer than --timeout")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield now, line[5:].strip().decode()


def stream_one(args, target: Target, prompt: str, session: requests.Session) -> Result:
    """Send one streamed completion and time its text chunks; errors are recorded, not raised."""
    result, last, chunks, done = Result(), None, 0, False
    body = {"model": target.model, "prompt": prompt, "max_tokens": args.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    try:
        with session.post(f"{target.url}/v1/completions", json=body, headers=headers(target),
                          stream=True, timeout=(10, args.idle_timeout)) as response:
            if response.status_code != 200:
                result.error = f"status {response.status_code}: {response.text[:160]}"
                return result
            for now, data in sse_events(response, sent + args.timeout):
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    result.error = f"error event: {json.dumps(event['error'])[:160]}"
                    return result
                if event.get("usage"):
                    result.tokens = event["usage"].get("completion_tokens", 0)
                    result.prompt_tokens = event["usage"].get("prompt_tokens", 0)
                if any(choice.get("text") for choice in event.get("choices") or []):
                    chunks += 1
                    if last is None:
                        result.ttft = now - sent
                    else:
                        result.gaps.append(now - last)
                    last = now
    except (requests.RequestException, TimeoutError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    if not done:
        result.error = "the stream ended without [DONE]"
    result.tokens = result.tokens or chunks
    return result


def run_load(args, target: Target, prompts: list[str], concurrency: int) -> dict:
    """Send every prompt with at most `concurrency` in flight; the run's figures."""
    local = threading.local()

    def one(prompt: str) -> Result:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return stream_one(args, target, prompt, local.session)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, prompts))
    elapsed = time.perf_counter() - start
    ok = [r for r in results if not r.error]
    ttft, gaps = [r.ttft for r in ok], [g for r in ok for g in r.gaps]
    return {"tokens_per_s": sum(r.tokens for r in ok) / elapsed, "elapsed": elapsed,
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "itl_p50": percentile(gaps, 50), "itl_p99": percentile(gaps, 99),
            "errors": len(results) - len(ok),
            "prompt_tokens": sorted(r.prompt_tokens for r in ok if r.prompt_tokens),
            "first_error": next((r.error for r in results if r.error), "")}


def line(label: str, fig: dict) -> str:
    """One table row of a run's (or the medians') figures."""
    return (f"{label:<24} {fig['tokens_per_s']:8.1f} {fig['ttft_p50'] * 1000:9.0f} "
            f"{fig['ttft_p99'] * 1000:9.0f} {fig['itl_p50'] * 1000:8.1f} "
            f"{fig['itl_p99'] * 1000:8.1f} {fig['errors']:6g}")


HEADER = (f"{'run':<24} {'tok/s':>8} {'ttft p50':>9} {'ttft p99':>9} {'itl p50':>8} "
          f"{'itl p99':>8} {'errors':>6}   (latencies in ms)")


def medians(runs: list[dict]) -> dict:
    """The median of each figure across runs."""
    keys = ("tokens_per_s", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "errors")
    return {k: statistics.median(run[k] for run in runs) for k in keys}


def report(targets: list[Target], workload: str, runs: dict) -> None:
    """Print the medians per target for one workload and their ratios to the first target."""
    print(f"\n{workload}: medians of {len(runs[targets[0].name])} runs per target")
    print(HEADER)
    med = {t.name: medians(runs[t.name]) for t in targets}
    for t in targets:
        print(line(t.name, med[t.name]))
    base = med[targets[0].name]
    for t in targets[1:]:
        ratios = ", ".join(f"{key} {base[key] / med[t.name][key] if med[t.name][key] else 0:.2f}x"
                           for key in ("tokens_per_s", "ttft_p50", "itl_p99"))
        print(f"{targets[0].name} / {t.name}: {ratios}")


def parse_args(argv=None):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", required=True, metavar="NAME=URL[,TOKEN]",
                        help="a server to measure, repeatable; TOKEN jwt: sign one with the secret")
    parser.add_argument("--jwt-secret", default=os.environ.get("JWT_SECRET", ""),
                        help="HS256 secret for TOKEN 'jwt' (default: $JWT_SECRET)")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS),
                        help="mixed (64 requests, 32 concurrent) or long (48, 48); repeatable")
    parser.add_argument("--concurrency", type=int, help="override the workload's concurrency")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 100), metavar="N",
                        help="timed runs of each target (1-99)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each target first")
    parser.add_argument("--settle-s", type=float, default=5.0, help="pause before each run")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="seconds without a byte before a stream counts as failed")
    return parser.parse_args(argv)


def main() -> int:
    """Measure every target on every workload, alternately, and print the medians."""
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    targets = [parse_target(spec, args.jwt_secret) for spec in args.target]
    workloads = args.workload or ["mixed"]
    for t in targets:
        try:
            t.model = served_model(t, 30)
        except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
            print(f"error: {t.name} ({t.url}): no model from /v1/models: {exc}", file=sys.stderr)
            return 2
        print(f"{t.name}: {t.url} serving {t.model}")
    runs, failed = {w: {t.name: [] for t in targets} for w in workloads}, 0
    invocation = f"{int(time.time()) % 100_000:05d}"  # no tag repeats from an earlier run
    print(HEADER)
    for round_no in range(-args.warmup + 1, args.rounds + 1):
        for w in workloads:
            # The same prompts for every target in a round; new tags each round and each run of
            # the script (no cache hits beyond what the workload shares).
            prompts = workload_prompts(w, tag=f"{invocation}{w[0]}{round_no + args.warmup}-")
            concurrency = args.concurrency or WORKLOADS[w][1]
            for t in targets:
                time.sleep(args.settle_s)
                fig = run_load(args, t, prompts, concurrency)
                label = f"{'warm-up' if round_no < 1 else f'round {round_no}'} {w} {t.name}"
                pt = fig["prompt_tokens"] or [0]
                print(f"{line(label, fig)}   prompt tokens {pt[0]}/{pt[len(pt) // 2]}/{pt[-1]}")
                if fig["errors"]:
                    print(f"  first error: {fig['first_error']}")
                if round_no >= 1:
                    runs[w][t.name].append(fig)
                    failed += fig["errors"]
    print(f"\n{args.max_tokens} new tokens each, greedy, no EOS; prompt tokens: min/median/max")
    for w in workloads:
        report(targets, w, runs[w])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
