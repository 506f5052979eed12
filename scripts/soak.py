#!/usr/bin/env python3
"""A day of traffic in minutes: drive a stack of our own with a seeded mix of clients while its
backend is killed, its API replicas restarted and its proxy restarted, then check that nothing
was lost, mixed up or leaked.

    scripts/soak.py                                  # 15 min, the real model in float32
    scripts/soak.py --form edge                      # the nginx edge and two API replicas
    scripts/soak.py --model mock --duration 90       # the mock backend, as `make test` runs it

Every request must end in a complete answer, a documented error (a 4xx it asked for, a 503 with
Retry-After, an error event) or a visible cut; every answerable request (greedy, or sampled
with a seed) must give the same text as on the idle server. Prints the tables and the checks;
exit code 1 if a check failed, 2 if the stack could not start.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from soaking.chaos import Chaos, plan
from soaking.clients import Traffic
from soaking.report import check_answers, check_events, check_leaks, check_requests, print_report
from soaking.stack import start_stack
from soaking.watch import Watch, growth, wait_idle

# Growth in resident memory tolerated after warm-up, by process kind (MiB): allocator arenas
# and caches settle on their own; a leak per request grows without end.
RSS_BOUNDS_MB = {"worker": 64.0, "backend": 256.0, "*": 64.0}
FD_SLACK = 8  # open files over the warm level: pooled connections still closing


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--form", choices=("single", "edge"), default="single",
                   help="single: proxy + one API; edge: nginx edge + proxy + two API replicas")
    p.add_argument("--model", choices=("real", "mock"), default="real")
    p.add_argument("--dtype", default="float32",
                   help="DTYPE of the real model; answers are held to the idle ones in float32")
    p.add_argument("--duration", type=float, default=900.0, help="seconds of traffic")
    p.add_argument("--warm-up", type=float, default=None,
                   help="seconds of traffic before the first fault (default: a tenth, at most 60)")
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=None, help="default 32 real, 64 mock")
    p.add_argument("--chaos-every", type=float, default=90.0, help="seconds between faults")
    p.add_argument("--quiet", type=float, default=60.0, help="quiet seconds before the leak checks")
    p.add_argument("--ready-within", type=float, default=10.0,
                   help="seconds a killed backend may take to be ready again")
    p.add_argument("--mock-step-ms", type=float, default=10.0)
    args = p.parse_args(argv)
    args.warm_up = min(60.0, args.duration / 10) if args.warm_up is None else args.warm_up
    args.max_tokens = args.max_tokens or (64 if args.model == "mock" else 32)
    return args


def api_env(args) -> dict:
    if args.model == "mock":
        return {"MOCK_STEP_MS": str(args.mock_step_ms)}
    env = {"DTYPE": args.dtype}
    if args.form == "edge" and "CPU_THREADS" not in os.environ:
        # Two replicas on one host share its cores (docs/deploy.md): each takes its half.
        env["CPU_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
    return env


def main() -> int:
    args = parse_args()
    try:
        stack = start_stack(args.form, args.model, api_env(args),
                            60 if args.model == "mock" else 900)
    except RuntimeError as exc:
        print(f"error: could not start the stack: {exc}", file=sys.stderr)
        return 2
    try:
        return soak(stack, args)
    finally:
        stack.stop()


def soak(stack, args) -> int:
    traffic = Traffic(stack, args.seed, args.clients, args.max_tokens)
    problems = traffic.take_references()
    if problems:
        print("error: the idle server did not answer the reference requests:\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"{len(traffic.pool)} reference answers taken; {args.clients} clients for "
          f"{args.duration:.0f} s", file=sys.stderr, flush=True)
    watch, began = Watch(stack), time.monotonic()
    watch.start()
    traffic.start()
    time.sleep(args.warm_up)
    warm_at = time.monotonic()
    chaos = Chaos(stack, plan(args.form, args.duration - args.warm_up, args.chaos_every))
    chaos.start()
    time.sleep(max(0.0, began + args.duration - time.monotonic()))
    stuck = traffic.stop()
    chaos.stop()
    seconds = time.monotonic() - began
    print(f"traffic stopped; {args.quiet:.0f} quiet seconds", file=sys.stderr, flush=True)
    time.sleep(args.quiet)
    idle, last_health = wait_idle(stack, 30)
    watch.sample()
    watch.stop()

    results = traffic.snapshot()
    compare = args.model == "mock" or args.dtype == "float32"
    checks = check_requests(results, chaos.events, args.form)
    checks.append(check_answers(results, traffic.references, compare))
    checks += check_events(results, chaos.events, args.ready_within)
    growths = growth(watch.samples, warm_at, settle_s=20.0)
    checks += check_leaks(idle, last_health, watch.faults, growths, RSS_BOUNDS_MB, FD_SLACK)
    if stuck:
        checks[0].failures += [f"{name} still waiting for its answer at the end" for name in stuck]
    print_report(checks, results, chaos.events, growths, seconds)
    return 0 if all(check.passed for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
